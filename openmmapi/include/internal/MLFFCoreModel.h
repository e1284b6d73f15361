#ifndef OPENMM_MLFF_CORE_MODEL_H_
#define OPENMM_MLFF_CORE_MODEL_H_

// Owning handles for the C core's objects, and loading a model with the core's error turned
// into an OpenMMException. Header-only on purpose: each plugin library links its own private
// copy of the core, so core objects never cross a library boundary.

#include "openmm/OpenMMException.h"

extern "C" {
#include "mlff/mlff.h"
}

#include <memory>
#include <string>

namespace MLFFPlugin {

struct CoreModelDeleter {
    void operator()(mlff_model* model) const {
        mlff_model_free(model);
    }
};
using CoreModelPtr = std::unique_ptr<mlff_model, CoreModelDeleter>;

struct CoreWorkspaceDeleter {
    void operator()(mlff_workspace* workspace) const {
        mlff_workspace_free(workspace);
    }
};
using CoreWorkspacePtr = std::unique_ptr<mlff_workspace, CoreWorkspaceDeleter>;

/**
 * Load a model file's bytes with the core; `name` names them in messages (a path, or
 * "<model bytes>"). Throws an OpenMMException carrying the core's message on any error,
 * including units other than the Å and eV that MLFFForce converts from.
 */
inline CoreModelPtr loadCoreModel(const std::string& bytes, const std::string& name) {
    mlff_model* raw = nullptr;
    mlff_error error{};
    if (mlff_model_load_memory(bytes.data(), bytes.size(), name.c_str(), &raw, &error) != MLFF_OK || raw == nullptr) {
        mlff_model_free(raw);
        std::string message = error.message;
        if (message.empty())
            message = "the model in '" + name + "' could not be loaded";
        throw OpenMM::OpenMMException("MLFFForce: " + message);
    }
    CoreModelPtr model(raw);
    const char* lengthUnit = mlff_model_length_unit(model.get());
    const char* energyUnit = mlff_model_energy_unit(model.get());
    if (lengthUnit == nullptr || std::string(lengthUnit) != "angstrom" || energyUnit == nullptr ||
        std::string(energyUnit) != "eV")
        throw OpenMM::OpenMMException("MLFFForce: model '" + name + "' uses units " +
                                      (lengthUnit ? lengthUnit : "?") + " and " + (energyUnit ? energyUnit : "?") +
                                      "; only angstrom and eV are supported");
    return model;
}

} // namespace MLFFPlugin

#endif // OPENMM_MLFF_CORE_MODEL_H_
