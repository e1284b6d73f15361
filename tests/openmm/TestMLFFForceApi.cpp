// MLFFForce's API without a platform in question: construction, getters and setters, every
// invalid use and its message, and the XML round trip. Contexts use the Reference platform.
#include "MLFFForce.h"
#include "MLFFTestHelpers.h"
#include "ReferenceMLFFKernelFactory.h"
#include "openmm/Context.h"
#include "openmm/OpenMMException.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/serialization/XmlSerializer.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>

using MLFFPlugin::MLFFForce;
using mlff_openmm_test::smallModelSpec;

// OpenMM 8.1's Context constructor leaks its ContextImpl when a force's initialize() throws (no
// destructor runs for a half-constructed Context); only ParticlesAreCheckedAgainstTheSystem
// provokes that, on purpose. LeakSanitizer reads this hook when the tests run under it.
extern "C" const char* __lsan_default_suppressions() {
    return "leak:MLFFForceApi_ParticlesAreCheckedAgainstTheSystem_Test\n";
}

static const bool registered = [] {
    registerMLFFReferenceKernelFactories();
    return true;
}();

TEST(MLFFForceApi, CreatedFromAFileOrItsBytes) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::TempFile file(bytes);
    MLFFForce fromFile(file.path());
    EXPECT_EQ(fromFile.getModelPath(), file.path());
    EXPECT_EQ(fromFile.getModelBytes(), bytes);
    EXPECT_DOUBLE_EQ(fromFile.getCutoff(), 0.5) << "5 Å in nm";
    EXPECT_EQ(fromFile.getMaxAtomicNumber(), 10);
    MLFFForce fromBytes(bytes, MLFFForce::ModelBytes);
    EXPECT_EQ(fromBytes.getModelPath(), "");
    EXPECT_EQ(fromBytes.getModelBytes(), bytes);
    EXPECT_DOUBLE_EQ(fromBytes.getCutoff(), 0.5);
}

TEST(MLFFForceApi, SettersAndGetters) {
    MLFFForce force(mlff_test::random_model_bytes(smallModelSpec()), MLFFForce::ModelBytes);
    EXPECT_EQ(force.getNumParticles(), 0);
    EXPECT_EQ(force.getNumReplicas(), 0);
    EXPECT_FALSE(force.usesPeriodicBoundaryConditions());
    EXPECT_FALSE(force.getUseTabulatedFilters());
    EXPECT_EQ(force.getEnergyScaleParameter(), "");
    EXPECT_EQ(force.getReplicaScale(7), 1.0);

    EXPECT_EQ(force.addParticle(4, 6), 0);
    EXPECT_EQ(force.addParticle(2, 1, 3), 1);
    EXPECT_EQ(force.getNumParticles(), 2);
    EXPECT_EQ(force.getNumReplicas(), 4);
    int particle, z, replica;
    force.getParticleParameters(0, particle, z, replica);
    EXPECT_EQ(particle, 4);
    EXPECT_EQ(z, 6);
    EXPECT_EQ(replica, 0);
    force.setParticleParameters(1, 5, 8, 1);
    force.getParticleParameters(1, particle, z, replica);
    EXPECT_EQ(particle, 5);
    EXPECT_EQ(z, 8);
    EXPECT_EQ(replica, 1);
    EXPECT_EQ(force.getNumReplicas(), 2);

    force.setReplicaScale(2, 0.25);
    EXPECT_EQ(force.getReplicaScale(2), 0.25);
    EXPECT_EQ(force.getReplicaScale(1), 1.0);
    force.setEnergyScaleParameter("lambda");
    EXPECT_EQ(force.getEnergyScaleParameter(), "lambda");
    force.setUsesPeriodicBoundaryConditions(true);
    EXPECT_TRUE(force.usesPeriodicBoundaryConditions());
    force.setUseTabulatedFilters(true);
    EXPECT_TRUE(force.getUseTabulatedFilters());
}

TEST(MLFFForceApi, InvalidArgumentsNameTheProblem) {
    MLFFForce force(mlff_test::random_model_bytes(smallModelSpec()), MLFFForce::ModelBytes);
    MLFF_EXPECT_THROW_WITH(force.addParticle(0, 11), "atomic number 11", "particle 0", "0 to 10");
    MLFF_EXPECT_THROW_WITH(force.addParticle(3, -1), "atomic number -1", "particle 3");
    MLFF_EXPECT_THROW_WITH(force.addParticle(0, 1, -2), "replica -2", "negative");
    MLFF_EXPECT_THROW_WITH(force.addParticle(-5, 1), "particle index -5", "negative");
    EXPECT_EQ(force.getNumParticles(), 0) << "rejected particles must not be added";
    force.addParticle(0, 1);
    int particle, z, replica;
    MLFF_EXPECT_THROW_WITH(force.getParticleParameters(1, particle, z, replica), "ML particle index 1", "out of range");
    MLFF_EXPECT_THROW_WITH(force.setParticleParameters(-1, 0, 1, 0), "ML particle index -1", "out of range");
    MLFF_EXPECT_THROW_WITH(force.setParticleParameters(0, 0, 99, 0), "atomic number 99");
    MLFF_EXPECT_THROW_WITH(force.setReplicaScale(-1, 2.0), "replica -1", "negative");
    MLFF_EXPECT_THROW_WITH(force.getReplicaScale(-3), "replica -3", "negative");
    MLFF_EXPECT_THROW_WITH(force.setReplicaScale(0, std::nan("")), "scale of replica 0", "not finite");
}

TEST(MLFFForceApi, ParticlesAreCheckedAgainstTheSystem) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    {
        OpenMM::System system;
        system.addParticle(1.0);
        system.addParticle(1.0);
        auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
        force->addParticle(0, 1);
        force->addParticle(2, 1);
        system.addForce(force);
        OpenMM::VerletIntegrator integrator(0.001);
        MLFF_EXPECT_THROW_WITH(OpenMM::Context(system, integrator, OpenMM::Platform::getPlatformByName("Reference")),
                               "ML particle 1", "particle 2", "out of range", "2 particles");
    }
    {
        OpenMM::System system;
        for (int i = 0; i < 3; i++)
            system.addParticle(1.0);
        auto* force = new MLFFForce(bytes, MLFFForce::ModelBytes);
        force->addParticle(1, 1);
        force->addParticle(2, 6);
        force->addParticle(1, 8, 1);
        system.addForce(force);
        OpenMM::VerletIntegrator integrator(0.001);
        MLFF_EXPECT_THROW_WITH(OpenMM::Context(system, integrator, OpenMM::Platform::getPlatformByName("Reference")),
                               "particle 1 was added twice", "ML particles 0 and 2");
    }
}

TEST(MLFFForceApi, ModelFileErrorsNameTheFile) {
    MLFF_EXPECT_THROW_WITH(MLFFForce("/nonexistent/dir/model.mlff.safetensors"), "cannot open model file",
                           "/nonexistent/dir/model.mlff.safetensors");
    mlff_test::TempFile garbage("this is not a safetensors file at all");
    MLFF_EXPECT_THROW_WITH(MLFFForce(garbage.path()), "MLFFForce: ", garbage.path());
    MLFF_EXPECT_THROW_WITH(MLFFForce("", MLFFForce::ModelBytes), "MLFFForce: ", "<model bytes>");
    // A model whose tensors don't fit together: the core's message, passed on.
    mlff_test::ModelFileBuilder builder(smallModelSpec());
    builder.remove_tensor(builder.tensors.front().name);
    mlff_test::TempFile broken(builder.bytes());
    MLFF_EXPECT_THROW_WITH(MLFFForce(broken.path()), "MLFFForce: ", broken.path());
}

namespace {

MLFFForce* makeConfiguredForce(const std::string& bytes, const std::string& path) {
    auto* force = path.empty() ? new MLFFForce(bytes, MLFFForce::ModelBytes) : new MLFFForce(path);
    force->addParticle(3, 6, 0);
    force->addParticle(0, 1, 2);
    force->addParticle(5, 8, 1);
    force->setReplicaScale(1, 0.5);
    force->setReplicaScale(3, -2.0);
    force->setEnergyScaleParameter("lambda_ml");
    force->setUsesPeriodicBoundaryConditions(true);
    force->setUseTabulatedFilters(true);
    force->setForceGroup(5);
    force->setName("the ML part");
    return force;
}

std::string serialize(const OpenMM::System& system) {
    std::stringstream xml;
    OpenMM::XmlSerializer::serialize<OpenMM::System>(&system, "System", xml);
    return xml.str();
}

} // namespace

TEST(MLFFForceApi, SerializationRoundTripKeepsEverything) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    mlff_test::TempFile file(bytes);
    OpenMM::System system;
    for (int i = 0; i < 6; i++)
        system.addParticle(1.0);
    system.addForce(makeConfiguredForce(bytes, file.path()));
    std::stringstream xml(serialize(system));
    std::unique_ptr<OpenMM::System> copy(OpenMM::XmlSerializer::deserialize<OpenMM::System>(xml));
    ASSERT_EQ(copy->getNumForces(), 1);
    const auto* original = dynamic_cast<const MLFFForce*>(&system.getForce(0));
    const auto* read = dynamic_cast<const MLFFForce*>(&copy->getForce(0));
    ASSERT_NE(read, nullptr) << "the deserialized force is not an MLFFForce";
    EXPECT_EQ(read->getModelBytes(), original->getModelBytes());
    EXPECT_EQ(read->getModelBytes(), bytes);
    EXPECT_EQ(read->getModelPath(), file.path());
    EXPECT_EQ(read->getCutoff(), original->getCutoff());
    EXPECT_EQ(read->getMaxAtomicNumber(), original->getMaxAtomicNumber());
    ASSERT_EQ(read->getNumParticles(), original->getNumParticles());
    for (int i = 0; i < original->getNumParticles(); i++) {
        int p1, z1, r1, p2, z2, r2;
        original->getParticleParameters(i, p1, z1, r1);
        read->getParticleParameters(i, p2, z2, r2);
        EXPECT_EQ(p1, p2);
        EXPECT_EQ(z1, z2);
        EXPECT_EQ(r1, r2);
    }
    EXPECT_EQ(read->getNumReplicas(), original->getNumReplicas());
    for (int r = 0; r < 6; r++)
        EXPECT_EQ(read->getReplicaScale(r), original->getReplicaScale(r)) << "replica " << r;
    EXPECT_EQ(read->getEnergyScaleParameter(), "lambda_ml");
    EXPECT_TRUE(read->usesPeriodicBoundaryConditions());
    EXPECT_TRUE(read->getUseTabulatedFilters());
    EXPECT_EQ(read->getForceGroup(), 5);
    EXPECT_EQ(read->getName(), "the ML part");
    // Serializing the copy gives the same XML.
    EXPECT_EQ(serialize(*copy), serialize(system));
}

TEST(MLFFForceApi, SerializationRejectsUnknownVersionsAndBrokenModels) {
    const std::string bytes = mlff_test::random_model_bytes(smallModelSpec());
    OpenMM::System system;
    for (int i = 0; i < 6; i++)
        system.addParticle(1.0);
    system.addForce(makeConfiguredForce(bytes, ""));
    const std::string xml = serialize(system);
    auto replaced = [&](const std::string& from, const std::string& to) {
        size_t at = xml.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        std::string edited = xml;
        if (at != std::string::npos)
            edited.replace(at, from.size(), to);
        return edited;
    };
    auto deserialize = [](const std::string& text) {
        std::stringstream in(text);
        delete OpenMM::XmlSerializer::deserialize<OpenMM::System>(in);
    };
    // The force's element is the only one carrying a "model" attribute.
    const size_t force = xml.find("model=");
    ASSERT_NE(force, std::string::npos);
    const size_t elementStart = xml.rfind('<', force);
    const std::string element = xml.substr(elementStart, xml.find('>', force) - elementStart);
    const size_t version = element.find("version=\"1\"");
    ASSERT_NE(version, std::string::npos) << element.substr(0, 200);
    std::string newer = element;
    newer.replace(version, 11, "version=\"2\"");
    MLFF_EXPECT_THROW_WITH(deserialize(replaced(element, newer)), "MLFFForce XML", "unsupported version 2", "version 1");
    MLFF_EXPECT_THROW_WITH(deserialize(replaced("model=\"", "model=\"*")), "MLFFForce XML", "not valid base64");
    // Valid base64 of other bytes: the size check, then the core's loader.
    std::string other = element;
    const size_t modelAt = other.find("model=\"") + 7;
    other.replace(modelAt, 8, "QUJDREVG"); // "ABCDEF" in place of the first 6 bytes
    MLFF_EXPECT_THROW_WITH(deserialize(replaced(element, other)), "MLFFForce XML", "embedded model is invalid");
}
