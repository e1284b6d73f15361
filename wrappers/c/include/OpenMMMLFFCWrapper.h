#ifndef OPENMM_MLFF_CWRAPPER_H_
#define OPENMM_MLFF_CWRAPPER_H_

/**
 * @file OpenMMMLFFCWrapper.h
 * The C API of openmm-mlff: MLFFForce for programs that use OpenMM's C API (OpenMMCWrapper.h).
 * Every name starts with OpenMM_MLFF; the functions mirror MLFFPlugin::MLFFForce (MLFFForce.h).
 *
 * Ownership: a force made by OpenMM_MLFFForce_create or _createFromBytes belongs to the caller,
 * who frees it with OpenMM_MLFFForce_destroy, until it is given to OpenMM_System_addForce
 * (as OpenMM_MLFFForce_asForce(force)): from then on the System owns it, frees it with itself,
 * and the caller must not destroy it (it may keep using it while the System lives). Strings and
 * bytes returned by a getter belong to the force and stay valid until the force is changed or
 * freed. Everything passed in stays the caller's (bytes and names are copied).
 *
 * Errors: each function that can fail returns an OpenMM_MLFFStatus (creators return NULL) and,
 * on failure, fills the caller's OpenMM_MLFFError when one is given (NULL: the message is not
 * wanted); on success the error is left as it was. No C++ exception crosses this API, nothing is
 * printed, nothing exits, and there is no global error state. Note that OpenMM's own C API does
 * not catch exceptions: OpenMM_Context_create aborts the program when the force is invalid for
 * the System, so check it first with OpenMM_MLFFForce_checkParticles.
 *
 * Getters that cannot fail return their value; given a NULL force they return 0, OpenMM_False
 * or "" (a NULL force is a caller's bug, never reported otherwise).
 *
 * Units are OpenMM's: nm, kJ/mol, kJ/mol/nm. Indices count from 0.
 */

#include "OpenMMCWrapper.h"

#include <stddef.h>

#if defined(_MSC_VER)
    #if defined(OPENMM_MLFF_BUILDING_SHARED_LIBRARY)
        #define OPENMM_EXPORT_MLFF_C __declspec(dllexport)
    #else
        #define OPENMM_EXPORT_MLFF_C __declspec(dllimport)
    #endif
#else
    #define OPENMM_EXPORT_MLFF_C
#endif

#if defined(__cplusplus)
extern "C" {
#endif

/** An MLFFForce (MLFFPlugin::MLFFForce). */
typedef struct OpenMM_MLFFForce_struct OpenMM_MLFFForce;

/** What a call that can fail returned. */
typedef enum {
    OpenMM_MLFF_Success = 0,
    /** A NULL pointer where an object was required. */
    OpenMM_MLFF_InvalidArgument = 1,
    /** The force refused (an OpenMMException in C++): the message names the problem. */
    OpenMM_MLFF_Failure = 2,
    /** Memory ran out. */
    OpenMM_MLFF_OutOfMemory = 3
} OpenMM_MLFFStatus;

/** Size of OpenMM_MLFFError::message; longer messages are cut, always NUL-terminated. */
#define OPENMM_MLFF_ERROR_MESSAGE_SIZE 1024

/** A failure's status and message, in the caller's storage (a local variable, say). */
typedef struct {
    OpenMM_MLFFStatus status;
    char message[OPENMM_MLFF_ERROR_MESSAGE_SIZE];
} OpenMM_MLFFError;

/**
 * Create a force from a model file.
 *
 * @param modelPath  path to the model file (*.mlff.safetensors)
 * @param error      filled on failure (may be NULL)
 * @return the new force (the caller owns it), or NULL if the file cannot be read or is not a
 *         valid model (the message names the file and the problem)
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFForce* OpenMM_MLFFForce_create(const char* modelPath, OpenMM_MLFFError* error);

/**
 * Create a force from the bytes of a model file (copied).
 *
 * @param bytes   the file's contents, `length` bytes
 * @param length  number of bytes
 * @param error   filled on failure (may be NULL)
 * @return the new force (the caller owns it), or NULL
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFForce* OpenMM_MLFFForce_createFromBytes(const void* bytes, size_t length,
                                                                              OpenMM_MLFFError* error);

/** Free a force the caller owns (never one given to a System). NULL is allowed. */
extern OPENMM_EXPORT_MLFF_C void OpenMM_MLFFForce_destroy(OpenMM_MLFFForce* force);

/** The force as an OpenMM_Force, for OpenMM_System_addForce and the OpenMM_Force_* functions (force group). */
extern OPENMM_EXPORT_MLFF_C OpenMM_Force* OpenMM_MLFFForce_asForce(OpenMM_MLFFForce* force);

/**
 * The OpenMM_Force as an MLFFForce (one from OpenMM_System_getForce of a deserialized System,
 * say), or NULL when it is another kind of force or NULL. Ownership does not change.
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFForce* OpenMM_MLFFForce_fromForce(OpenMM_Force* force);

/**
 * Add an ML particle.
 *
 * @param particle      the System's index of the particle
 * @param atomicNumber  its atomic number, in [0, OpenMM_MLFFForce_getMaxAtomicNumber(force)]
 * @param replica       the replica (structure) it belongs to, >= 0
 * @param index         receives the ML particle's index in this force (may be NULL)
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_addParticle(OpenMM_MLFFForce* force, int particle,
                                                                          int atomicNumber, int replica, int* index,
                                                                          OpenMM_MLFFError* error);

/** Number of ML particles. */
extern OPENMM_EXPORT_MLFF_C int OpenMM_MLFFForce_getNumParticles(const OpenMM_MLFFForce* force);

/** The parameters of ML particle `index`; each output pointer may be NULL. */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_getParticleParameters(const OpenMM_MLFFForce* force,
                                                                                    int index, int* particle,
                                                                                    int* atomicNumber, int* replica,
                                                                                    OpenMM_MLFFError* error);

/** Change ML particle `index` (in an existing Context only a new Context sees it). */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_setParticleParameters(OpenMM_MLFFForce* force, int index,
                                                                                    int particle, int atomicNumber,
                                                                                    int replica,
                                                                                    OpenMM_MLFFError* error);

/** One more than the largest replica index of any ML particle (0 when there are none). */
extern OPENMM_EXPORT_MLFF_C int OpenMM_MLFFForce_getNumReplicas(const OpenMM_MLFFForce* force);

/** The factor of replica `replica`'s energy (1 unless set) into *scale. */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_getReplicaScale(const OpenMM_MLFFForce* force,
                                                                              int replica, double* scale,
                                                                              OpenMM_MLFFError* error);

/** Set the factor of replica `replica`'s energy; a Context sees it after _updateParametersInContext. */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_setReplicaScale(OpenMM_MLFFForce* force, int replica,
                                                                              double scale, OpenMM_MLFFError* error);

/**
 * Name a global Context parameter that multiplies the whole ML energy (its default is 1);
 * "" means none (the default).
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_setEnergyScaleParameter(OpenMM_MLFFForce* force,
                                                                                      const char* name,
                                                                                      OpenMM_MLFFError* error);

/** The energy scale parameter's name, "" when none. */
extern OPENMM_EXPORT_MLFF_C const char* OpenMM_MLFFForce_getEnergyScaleParameter(const OpenMM_MLFFForce* force);

/** Whether the structures are periodic in the Context's box (rectangular or triclinic). */
extern OPENMM_EXPORT_MLFF_C void OpenMM_MLFFForce_setUsesPeriodicBoundaryConditions(OpenMM_MLFFForce* force,
                                                                                   OpenMM_Boolean periodic);
extern OPENMM_EXPORT_MLFF_C OpenMM_Boolean OpenMM_MLFFForce_usesPeriodicBoundaryConditions(const OpenMM_MLFFForce* force);

/** Use tabulated radial filters (faster, approximate; off by default). */
extern OPENMM_EXPORT_MLFF_C void OpenMM_MLFFForce_setUseTabulatedFilters(OpenMM_MLFFForce* force,
                                                                        OpenMM_Boolean tabulated);
extern OPENMM_EXPORT_MLFF_C OpenMM_Boolean OpenMM_MLFFForce_getUseTabulatedFilters(const OpenMM_MLFFForce* force);

/** The model's cutoff, nm. */
extern OPENMM_EXPORT_MLFF_C double OpenMM_MLFFForce_getCutoff(const OpenMM_MLFFForce* force);

/** The largest atomic number the model knows. */
extern OPENMM_EXPORT_MLFF_C int OpenMM_MLFFForce_getMaxAtomicNumber(const OpenMM_MLFFForce* force);

/** The path the model was read from, "" when it was created from bytes. */
extern OPENMM_EXPORT_MLFF_C const char* OpenMM_MLFFForce_getModelPath(const OpenMM_MLFFForce* force);

/** The model file's bytes (owned by the force); their number into *length (which may be NULL). */
extern OPENMM_EXPORT_MLFF_C const void* OpenMM_MLFFForce_getModelBytes(const OpenMM_MLFFForce* force, size_t* length);

/**
 * Check the ML particles against a System as a Context would (each a particle of the System,
 * none added twice), so that OpenMM_Context_create does not abort on them.
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_checkParticles(const OpenMM_MLFFForce* force,
                                                                             const OpenMM_System* system,
                                                                             OpenMM_MLFFError* error);

/**
 * The per-replica energies of this force's last evaluation in `context` (evaluating it first
 * if it never was), scaled as in the total: energy scale parameter * replica scale * E_r, in
 * kJ/mol; they sum to this force's energy.
 *
 * @param energies  resized to OpenMM_MLFFForce_getNumReplicas(force) and filled, element r for
 *                  replica r (the caller owns it: OpenMM_DoubleArray_create(0))
 */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_getReplicaEnergies(const OpenMM_MLFFForce* force,
                                                                                 OpenMM_Context* context,
                                                                                 OpenMM_DoubleArray* energies,
                                                                                 OpenMM_MLFFError* error);

/** Copy the replica scales into `context` (the particles and the model cannot change there). */
extern OPENMM_EXPORT_MLFF_C OpenMM_MLFFStatus OpenMM_MLFFForce_updateParametersInContext(OpenMM_MLFFForce* force,
                                                                                        OpenMM_Context* context,
                                                                                        OpenMM_MLFFError* error);

#if defined(__cplusplus)
}
#endif

#endif /* OPENMM_MLFF_CWRAPPER_H_ */
