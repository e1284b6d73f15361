// Registers MLFFForce's serialization proxy when libOpenMMMLFF is loaded, so XmlSerializer
// handles Systems holding an MLFFForce without any call from the user.
#include "MLFFForce.h"
#include "MLFFForceProxy.h"
#include "openmm/serialization/SerializationProxy.h"

#include <typeinfo>

extern "C" OPENMM_EXPORT_MLFF void registerMLFFSerializationProxies();

#if defined(_MSC_VER)
struct MLFFSerializationProxiesInitializer {
    MLFFSerializationProxiesInitializer() {
        registerMLFFSerializationProxies();
    }
};
static MLFFSerializationProxiesInitializer initializer;
#else
extern "C" void __attribute__((constructor)) registerMLFFSerializationProxiesAtLoad() {
    registerMLFFSerializationProxies();
}
#endif

extern "C" OPENMM_EXPORT_MLFF void registerMLFFSerializationProxies() {
    static bool registered = false;
    if (registered)
        return;
    registered = true;
    OpenMM::SerializationProxy::registerProxy(typeid(MLFFPlugin::MLFFForce), new MLFFPlugin::MLFFForceProxy());
}
