#include "MLFFForceProxy.h"
#include "Base64.h"
#include "MLFFForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"

#include <memory>
#include <string>

using namespace MLFFPlugin;
using namespace OpenMM;
using std::string;

MLFFForceProxy::MLFFForceProxy() : SerializationProxy("MLFFForce") {
}

void MLFFForceProxy::serialize(const void* object, SerializationNode& node) const {
    const MLFFForce& force = *static_cast<const MLFFForce*>(object);
    node.setIntProperty("version", Version);
    node.setStringProperty("name", force.getName());
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    node.setBoolProperty("tabulatedFilters", force.getUseTabulatedFilters());
    node.setStringProperty("energyScaleParameter", force.getEnergyScaleParameter());
    node.setStringProperty("modelPath", force.getModelPath());
    node.setLongProperty("modelSize", static_cast<long long>(force.getModelBytes().size()));
    node.setStringProperty("model", base64Encode(force.getModelBytes()));
    SerializationNode& particles = node.createChildNode("Particles");
    for (int i = 0; i < force.getNumParticles(); i++) {
        int particle, atomicNumber, replica;
        force.getParticleParameters(i, particle, atomicNumber, replica);
        particles.createChildNode("Particle")
            .setIntProperty("p", particle)
            .setIntProperty("z", atomicNumber)
            .setIntProperty("replica", replica);
    }
    SerializationNode& scales = node.createChildNode("ReplicaScales");
    for (size_t r = 0; r < force.replicaScales.size(); r++)
        scales.createChildNode("Scale")
            .setIntProperty("replica", static_cast<int>(r))
            .setDoubleProperty("value", force.replicaScales[r]);
}

void* MLFFForceProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version != Version)
        throw OpenMMException("MLFFForce XML: unsupported version " + std::to_string(version) +
                              " (this plugin reads version " + std::to_string(Version) + ")");
    string bytes;
    if (!base64Decode(node.getStringProperty("model"), &bytes))
        throw OpenMMException("MLFFForce XML: the embedded model is not valid base64");
    if (static_cast<long long>(bytes.size()) != node.getLongProperty("modelSize"))
        throw OpenMMException("MLFFForce XML: the embedded model has " + std::to_string(bytes.size()) +
                              " bytes but modelSize says " + std::to_string(node.getLongProperty("modelSize")));
    std::unique_ptr<MLFFForce> force;
    try {
        force.reset(new MLFFForce(bytes, MLFFForce::ModelBytes));
    }
    catch (const OpenMMException& e) {
        throw OpenMMException(string("MLFFForce XML: the embedded model is invalid: ") + e.what());
    }
    force->modelPath = node.getStringProperty("modelPath", "");
    force->setName(node.getStringProperty("name", "MLFFForce"));
    force->setForceGroup(node.getIntProperty("forceGroup", 0));
    force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic", false));
    force->setUseTabulatedFilters(node.getBoolProperty("tabulatedFilters", false));
    force->setEnergyScaleParameter(node.getStringProperty("energyScaleParameter", ""));
    for (const SerializationNode& particle : node.getChildNode("Particles").getChildren())
        force->addParticle(particle.getIntProperty("p"), particle.getIntProperty("z"), particle.getIntProperty("replica"));
    for (const SerializationNode& scale : node.getChildNode("ReplicaScales").getChildren())
        force->setReplicaScale(scale.getIntProperty("replica"), scale.getDoubleProperty("value"));
    return force.release();
}
