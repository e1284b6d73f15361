// CudaPluginSetup.h: loading OpenMM's CUDA platform and this project's CUDA plugin at run time.
//
// Both are dlopen'ed (Platform::loadPluginLibrary) rather than linked: OpenMM's CUDA library
// needs the GPU driver (libcuda.so.1), and an executable linked to it could not even start on a
// machine without one, where these tests must build, list themselves and skip.
#pragma once

#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"

#include <dlfcn.h>

#include <cstdlib>
#include <iostream>
#include <string>

namespace mlff_cuda_test {

/**
 * Loads libOpenMMCUDA.so from OpenMM's plugins directory, then the MLFF CUDA plugin from
 * $MLFF_CUDA_PLUGIN (set by scripts/gpu-tests.sh on the device) or the build tree. Returns false,
 * saying why once, when either can't be loaded (no GPU driver here): the tests then skip.
 */
inline bool loadCudaPlugins() {
    static const bool loaded = [] {
        try {
            OpenMM::Platform::loadPluginLibrary(std::string(MLFF_OPENMM_PLUGINS_DIR) + "/libOpenMMCUDA.so");
        }
        catch (const OpenMM::OpenMMException& e) {
            std::cerr << "[cuda tests] OpenMM's CUDA platform is not available: " << e.what() << "\n";
            return false;
        }
        const char* override = std::getenv("MLFF_CUDA_PLUGIN");
        const std::string plugin = override != nullptr && *override != '\0' ? override : MLFF_CUDA_PLUGIN;
        // A missing MLFF plugin is an error, not a skip: the CUDA platform is there.
        OpenMM::Platform::loadPluginLibrary(plugin);
        return true;
    }();
    return loaded;
}

/**
 * The compute capability's major number of GPU 0 (through the driver, dlopen'ed like the
 * plugins), or 0 if it can't be read: the cluster path needs 9 (sm_90).
 */
inline int computeCapabilityMajor() {
    static const int major = [] {
        void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        if (driver == nullptr)
            return 0;
        using Init = int (*)(unsigned int);
        using DeviceGet = int (*)(int*, int);
        using GetAttribute = int (*)(int*, int, int);
        auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
        auto deviceGet = reinterpret_cast<DeviceGet>(dlsym(driver, "cuDeviceGet"));
        auto getAttribute = reinterpret_cast<GetAttribute>(dlsym(driver, "cuDeviceGetAttribute"));
        const int majorAttribute = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        int device = 0, value = 0;
        if (init == nullptr || deviceGet == nullptr || getAttribute == nullptr || init(0) != 0 ||
            deviceGet(&device, 0) != 0 || getAttribute(&value, majorAttribute, device) != 0)
            return 0;
        return value;
    }();
    return major;
}

} // namespace mlff_cuda_test
