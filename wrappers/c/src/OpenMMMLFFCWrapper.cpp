// The C API of MLFFForce (OpenMMMLFFCWrapper.h). OpenMM's C handles are its C++ objects
// reinterpret_cast (as in OpenMMCWrapper.cpp): OpenMM_Force is OpenMM::Force, OpenMM_Context is
// OpenMM::Context, OpenMM_DoubleArray is std::vector<double>. OpenMM_MLFFForce is
// MLFFPlugin::MLFFForce. Every call that can throw runs inside reportFailures(), so no exception
// leaves this file.
#include "OpenMMMLFFCWrapper.h"
#include "MLFFForce.h"
#include "internal/MLFFForceImpl.h"
#include "openmm/Context.h"
#include "openmm/OpenMMException.h"
#include "openmm/System.h"

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

using MLFFPlugin::MLFFForce;

namespace {

MLFFForce* fromHandle(OpenMM_MLFFForce* force) {
    return reinterpret_cast<MLFFForce*>(force);
}

const MLFFForce* fromHandle(const OpenMM_MLFFForce* force) {
    return reinterpret_cast<const MLFFForce*>(force);
}

OpenMM_MLFFForce* toHandle(MLFFForce* force) {
    return reinterpret_cast<OpenMM_MLFFForce*>(force);
}

OpenMM_MLFFStatus fail(OpenMM_MLFFError* error, OpenMM_MLFFStatus status, const char* message) {
    if (error != nullptr) {
        error->status = status;
        std::snprintf(error->message, sizeof(error->message), "%s", message);
    }
    return status;
}

// Runs `body` (which returns nothing), turning every exception into a status and a message.
template <class Body>
OpenMM_MLFFStatus reportFailures(OpenMM_MLFFError* error, Body&& body) {
    try {
        body();
        return OpenMM_MLFF_Success;
    }
    catch (const std::bad_alloc&) {
        return fail(error, OpenMM_MLFF_OutOfMemory, "MLFFForce: out of memory");
    }
    catch (const std::exception& e) {
        return fail(error, OpenMM_MLFF_Failure, e.what());
    }
    catch (...) {
        return fail(error, OpenMM_MLFF_Failure, "MLFFForce: unknown error");
    }
}

OpenMM_MLFFStatus nullArgument(OpenMM_MLFFError* error, const char* function, const char* argument) {
    char message[256];
    std::snprintf(message, sizeof(message), "%s: %s is NULL", function, argument);
    return fail(error, OpenMM_MLFF_InvalidArgument, message);
}

} // namespace

extern "C" {

OpenMM_MLFFForce* OpenMM_MLFFForce_create(const char* modelPath, OpenMM_MLFFError* error) {
    if (modelPath == nullptr) {
        nullArgument(error, "OpenMM_MLFFForce_create", "modelPath");
        return nullptr;
    }
    MLFFForce* force = nullptr;
    reportFailures(error, [&] { force = new MLFFForce(modelPath, MLFFForce::ModelFile); });
    return toHandle(force);
}

OpenMM_MLFFForce* OpenMM_MLFFForce_createFromBytes(const void* bytes, size_t length, OpenMM_MLFFError* error) {
    if (bytes == nullptr && length > 0) {
        nullArgument(error, "OpenMM_MLFFForce_createFromBytes", "bytes");
        return nullptr;
    }
    MLFFForce* force = nullptr;
    reportFailures(error, [&] {
        const std::string modelBytes = length == 0 ? std::string() : std::string(static_cast<const char*>(bytes), length);
        force = new MLFFForce(modelBytes, MLFFForce::ModelBytes);
    });
    return toHandle(force);
}

void OpenMM_MLFFForce_destroy(OpenMM_MLFFForce* force) {
    delete fromHandle(force);
}

OpenMM_Force* OpenMM_MLFFForce_asForce(OpenMM_MLFFForce* force) {
    OpenMM::Force* base = fromHandle(force);
    return reinterpret_cast<OpenMM_Force*>(base);
}

OpenMM_MLFFForce* OpenMM_MLFFForce_fromForce(OpenMM_Force* force) {
    return toHandle(dynamic_cast<MLFFForce*>(reinterpret_cast<OpenMM::Force*>(force)));
}

OpenMM_MLFFStatus OpenMM_MLFFForce_addParticle(OpenMM_MLFFForce* force, int particle, int atomicNumber, int replica,
                                               int* index, OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_addParticle", "force");
    return reportFailures(error, [&] {
        const int added = fromHandle(force)->addParticle(particle, atomicNumber, replica);
        if (index != nullptr)
            *index = added;
    });
}

int OpenMM_MLFFForce_getNumParticles(const OpenMM_MLFFForce* force) {
    return force == nullptr ? 0 : fromHandle(force)->getNumParticles();
}

OpenMM_MLFFStatus OpenMM_MLFFForce_getParticleParameters(const OpenMM_MLFFForce* force, int index, int* particle,
                                                         int* atomicNumber, int* replica, OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getParticleParameters", "force");
    return reportFailures(error, [&] {
        int p, z, r;
        fromHandle(force)->getParticleParameters(index, p, z, r);
        if (particle != nullptr)
            *particle = p;
        if (atomicNumber != nullptr)
            *atomicNumber = z;
        if (replica != nullptr)
            *replica = r;
    });
}

OpenMM_MLFFStatus OpenMM_MLFFForce_setParticleParameters(OpenMM_MLFFForce* force, int index, int particle,
                                                         int atomicNumber, int replica, OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_setParticleParameters", "force");
    return reportFailures(error,
                          [&] { fromHandle(force)->setParticleParameters(index, particle, atomicNumber, replica); });
}

int OpenMM_MLFFForce_getNumReplicas(const OpenMM_MLFFForce* force) {
    return force == nullptr ? 0 : fromHandle(force)->getNumReplicas();
}

OpenMM_MLFFStatus OpenMM_MLFFForce_getReplicaScale(const OpenMM_MLFFForce* force, int replica, double* scale,
                                                   OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getReplicaScale", "force");
    if (scale == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getReplicaScale", "scale");
    return reportFailures(error, [&] { *scale = fromHandle(force)->getReplicaScale(replica); });
}

OpenMM_MLFFStatus OpenMM_MLFFForce_setReplicaScale(OpenMM_MLFFForce* force, int replica, double scale,
                                                   OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_setReplicaScale", "force");
    return reportFailures(error, [&] { fromHandle(force)->setReplicaScale(replica, scale); });
}

OpenMM_MLFFStatus OpenMM_MLFFForce_setEnergyScaleParameter(OpenMM_MLFFForce* force, const char* name,
                                                           OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_setEnergyScaleParameter", "force");
    if (name == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_setEnergyScaleParameter", "name");
    return reportFailures(error, [&] { fromHandle(force)->setEnergyScaleParameter(name); });
}

const char* OpenMM_MLFFForce_getEnergyScaleParameter(const OpenMM_MLFFForce* force) {
    return force == nullptr ? "" : fromHandle(force)->getEnergyScaleParameter().c_str();
}

void OpenMM_MLFFForce_setUsesPeriodicBoundaryConditions(OpenMM_MLFFForce* force, OpenMM_Boolean periodic) {
    if (force != nullptr)
        fromHandle(force)->setUsesPeriodicBoundaryConditions(periodic != OpenMM_False);
}

OpenMM_Boolean OpenMM_MLFFForce_usesPeriodicBoundaryConditions(const OpenMM_MLFFForce* force) {
    return force != nullptr && fromHandle(force)->usesPeriodicBoundaryConditions() ? OpenMM_True : OpenMM_False;
}

void OpenMM_MLFFForce_setUseTabulatedFilters(OpenMM_MLFFForce* force, OpenMM_Boolean tabulated) {
    if (force != nullptr)
        fromHandle(force)->setUseTabulatedFilters(tabulated != OpenMM_False);
}

OpenMM_Boolean OpenMM_MLFFForce_getUseTabulatedFilters(const OpenMM_MLFFForce* force) {
    return force != nullptr && fromHandle(force)->getUseTabulatedFilters() ? OpenMM_True : OpenMM_False;
}

double OpenMM_MLFFForce_getCutoff(const OpenMM_MLFFForce* force) {
    return force == nullptr ? 0.0 : fromHandle(force)->getCutoff();
}

int OpenMM_MLFFForce_getMaxAtomicNumber(const OpenMM_MLFFForce* force) {
    return force == nullptr ? 0 : fromHandle(force)->getMaxAtomicNumber();
}

const char* OpenMM_MLFFForce_getModelPath(const OpenMM_MLFFForce* force) {
    return force == nullptr ? "" : fromHandle(force)->getModelPath().c_str();
}

const void* OpenMM_MLFFForce_getModelBytes(const OpenMM_MLFFForce* force, size_t* length) {
    if (force == nullptr) {
        if (length != nullptr)
            *length = 0;
        return nullptr;
    }
    const std::string& bytes = fromHandle(force)->getModelBytes();
    if (length != nullptr)
        *length = bytes.size();
    return bytes.data();
}

OpenMM_MLFFStatus OpenMM_MLFFForce_checkParticles(const OpenMM_MLFFForce* force, const OpenMM_System* system,
                                                  OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_checkParticles", "force");
    if (system == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_checkParticles", "system");
    return reportFailures(error, [&] {
        const int numParticles = reinterpret_cast<const OpenMM::System*>(system)->getNumParticles();
        MLFFPlugin::MLFFForceImpl::checkParticles(*fromHandle(force), numParticles);
    });
}

OpenMM_MLFFStatus OpenMM_MLFFForce_getReplicaEnergies(const OpenMM_MLFFForce* force, OpenMM_Context* context,
                                                      OpenMM_DoubleArray* energies, OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getReplicaEnergies", "force");
    if (context == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getReplicaEnergies", "context");
    if (energies == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_getReplicaEnergies", "energies");
    return reportFailures(error, [&] {
        *reinterpret_cast<std::vector<double>*>(energies) =
            fromHandle(force)->getReplicaEnergies(*reinterpret_cast<OpenMM::Context*>(context));
    });
}

OpenMM_MLFFStatus OpenMM_MLFFForce_updateParametersInContext(OpenMM_MLFFForce* force, OpenMM_Context* context,
                                                             OpenMM_MLFFError* error) {
    if (force == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_updateParametersInContext", "force");
    if (context == nullptr)
        return nullArgument(error, "OpenMM_MLFFForce_updateParametersInContext", "context");
    return reportFailures(error,
                          [&] { fromHandle(force)->updateParametersInContext(*reinterpret_cast<OpenMM::Context*>(context)); });
}

} // extern "C"
