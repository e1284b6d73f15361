#ifndef OPENMM_MLFF_FORCE_PROXY_H_
#define OPENMM_MLFF_FORCE_PROXY_H_

#include "internal/windowsExportMLFF.h"
#include "openmm/serialization/SerializationProxy.h"

namespace MLFFPlugin {

/**
 * XML serialization of MLFFForce (type name "MLFFForce", version 1). The model file's bytes
 * are embedded in base64, so a serialized System needs no other file; reading refuses other
 * versions and corrupt embedded models with a message saying which.
 */
class OPENMM_EXPORT_MLFF MLFFForceProxy : public OpenMM::SerializationProxy {
public:
    static constexpr int Version = 1;
    MLFFForceProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const override;
    void* deserialize(const OpenMM::SerializationNode& node) const override;
};

} // namespace MLFFPlugin

#endif // OPENMM_MLFF_FORCE_PROXY_H_
