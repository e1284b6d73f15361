// OpenMM loads, and loading libOpenMMMLFFReference as a plugin (the way OpenMM finds plugins
// in lib/plugins) registers the MLFFForce kernel with the Reference and CPU platforms. This
// executable does not link the plugin, so only OpenMM's loader can register it.
#include "MLFFKernels.h"
#include "PluginSetup.h"
#include "openmm/Platform.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using OpenMM::Platform;

TEST(MLFFPluginLoading, OpenMMLoads) {
    EXPECT_FALSE(Platform::getOpenMMVersion().empty());
    EXPECT_NO_THROW(Platform::getPlatformByName("Reference"));
}

TEST(MLFFPluginLoading, RegistersWithReferenceAndCpu) {
    ASSERT_TRUE(mlff_openmm_test::loadCpuPlatform()) << "OpenMM's CPU platform could not be loaded from " MLFF_OPENMM_PLUGINS_DIR;
    const std::vector<std::string> kernels = {MLFFPlugin::CalcMLFFForceKernel::Name()};
    EXPECT_FALSE(Platform::getPlatformByName("Reference").supportsKernels(kernels)) << "registered before loading?";
    Platform::loadPluginLibrary(MLFF_REFERENCE_PLUGIN);
    EXPECT_TRUE(Platform::getPlatformByName("Reference").supportsKernels(kernels));
    EXPECT_TRUE(Platform::getPlatformByName("CPU").supportsKernels(kernels));
}

TEST(MLFFPluginLoading, LoadsFromAPluginsDirectory) {
    std::vector<std::string> loaded = Platform::loadPluginsFromDirectory(MLFF_PLUGINS_DIR);
    bool found = false;
    for (const std::string& file : loaded)
        found = found || file.find("libOpenMMMLFFReference") != std::string::npos;
    EXPECT_TRUE(found) << "libOpenMMMLFFReference not loaded from " MLFF_PLUGINS_DIR;
    EXPECT_TRUE(Platform::getPlatformByName("Reference").supportsKernels({MLFFPlugin::CalcMLFFForceKernel::Name()}));
}
