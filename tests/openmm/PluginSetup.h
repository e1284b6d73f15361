// PluginSetup.h: making OpenMM's CPU platform and this plugin's kernels available to a test
// executable that links the plugin libraries directly (as openmmexampleplugin's tests do).
#pragma once

#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"

#include <string>

namespace mlff_openmm_test {

/** Loads OpenMM's CPU platform plugin from MLFF_OPENMM_PLUGINS_DIR once; false if it can't be. */
inline bool loadCpuPlatform() {
    static const bool loaded = [] {
        try {
            OpenMM::Platform::getPlatformByName("CPU");
            return true;
        }
        catch (const OpenMM::OpenMMException&) {
        }
        try {
            OpenMM::Platform::loadPluginLibrary(std::string(MLFF_OPENMM_PLUGINS_DIR) + "/libOpenMMCPU.so");
            return true;
        }
        catch (const OpenMM::OpenMMException&) {
            return false;
        }
    }();
    return loaded;
}

} // namespace mlff_openmm_test
