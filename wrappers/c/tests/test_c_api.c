/*
 * test_c_api MODEL PLUGIN_DIR: the C API of MLFFForce (OpenMMMLFFCWrapper.h), from C.
 * Every function, each error with its status and message, ownership through a System, the
 * replica energies through a Context, and an XML round trip through OpenMM's C API.
 * Prints one line per failed check and exits non-zero if any failed.
 */
#include "OpenMMCWrapper.h"
#include "OpenMMMLFFCWrapper.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(condition)                                                           \
    do {                                                                           \
        if (!(condition)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            failures++;                                                            \
        }                                                                          \
    } while (0)

/* A call that must fail with `status` and a message containing `text`. */
#define CHECK_FAILS(call, error, expectedStatus, text)                                                \
    do {                                                                                              \
        memset(&(error), 0, sizeof(error));                                                           \
        OpenMM_MLFFStatus status_ = (call);                                                           \
        CHECK(status_ == (expectedStatus));                                                           \
        CHECK((error).status == (expectedStatus));                                                    \
        if (strstr((error).message, (text)) == NULL) {                                                \
            fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, (error).message, (text)); \
            failures++;                                                                               \
        }                                                                                             \
    } while (0)

static const int ethanolZ[] = {6, 6, 8, 1, 1, 1, 1, 1, 1};
static const double ethanolAngstrom[][3] = {
    {1.1879, -0.3829, 0.0000}, {0.0000, 0.5526, 0.0000},   {-1.1867, -0.2472, 0.0000},
    {-1.9237, 0.3850, 0.0000}, {2.1392, 0.1573, 0.0000},   {1.1523, -1.0239, 0.8804},
    {1.1523, -1.0239, -0.8804}, {0.0370, 1.2014, 0.8797}, {0.0370, 1.2014, -0.8797}};
#define ETHANOL_ATOMS 9

static void testCreationErrors(const char* modelPath) {
    OpenMM_MLFFError error;
    memset(&error, 0, sizeof(error));
    CHECK(OpenMM_MLFFForce_create("/nonexistent/model.mlff.safetensors", &error) == NULL);
    CHECK(error.status == OpenMM_MLFF_Failure);
    CHECK(strstr(error.message, "cannot open model file '/nonexistent/model.mlff.safetensors'") != NULL);

    memset(&error, 0, sizeof(error));
    CHECK(OpenMM_MLFFForce_create(NULL, &error) == NULL);
    CHECK(error.status == OpenMM_MLFF_InvalidArgument);
    CHECK(strstr(error.message, "modelPath is NULL") != NULL);

    memset(&error, 0, sizeof(error));
    CHECK(OpenMM_MLFFForce_createFromBytes("garbage", 7, &error) == NULL);
    CHECK(error.status == OpenMM_MLFF_Failure);
    CHECK(strstr(error.message, "<model bytes>") != NULL);

    memset(&error, 0, sizeof(error));
    CHECK(OpenMM_MLFFForce_createFromBytes(NULL, 0, &error) == NULL);
    CHECK(error.status == OpenMM_MLFF_Failure);

    /* Without an error to fill, failures still return NULL. */
    CHECK(OpenMM_MLFFForce_create("/nonexistent/model.mlff.safetensors", NULL) == NULL);
    (void) modelPath;
}

static void testGettersAndSetters(const char* modelPath) {
    OpenMM_MLFFError error;
    OpenMM_MLFFForce* force = OpenMM_MLFFForce_create(modelPath, &error);
    CHECK(force != NULL);
    if (force == NULL)
        return;
    CHECK(fabs(OpenMM_MLFFForce_getCutoff(force) - 0.5) < 1e-15);
    CHECK(OpenMM_MLFFForce_getMaxAtomicNumber(force) == 10);
    CHECK(strcmp(OpenMM_MLFFForce_getModelPath(force), modelPath) == 0);

    int index = -1;
    CHECK(OpenMM_MLFFForce_addParticle(force, 4, 8, 0, &index, &error) == OpenMM_MLFF_Success && index == 0);
    CHECK(OpenMM_MLFFForce_addParticle(force, 2, 1, 3, NULL, NULL) == OpenMM_MLFF_Success);
    CHECK(OpenMM_MLFFForce_getNumParticles(force) == 2);
    CHECK(OpenMM_MLFFForce_getNumReplicas(force) == 4);
    int particle = -1, atomicNumber = -1, replica = -1;
    CHECK(OpenMM_MLFFForce_getParticleParameters(force, 1, &particle, &atomicNumber, &replica, &error) ==
          OpenMM_MLFF_Success);
    CHECK(particle == 2 && atomicNumber == 1 && replica == 3);
    CHECK(OpenMM_MLFFForce_setParticleParameters(force, 1, 5, 6, 1, &error) == OpenMM_MLFF_Success);
    CHECK(OpenMM_MLFFForce_getParticleParameters(force, 1, &particle, NULL, NULL, &error) == OpenMM_MLFF_Success);
    CHECK(particle == 5);
    CHECK(OpenMM_MLFFForce_getNumReplicas(force) == 2);

    double scale = 0.0;
    CHECK(OpenMM_MLFFForce_getReplicaScale(force, 7, &scale, &error) == OpenMM_MLFF_Success && scale == 1.0);
    CHECK(OpenMM_MLFFForce_setReplicaScale(force, 1, 0.5, &error) == OpenMM_MLFF_Success);
    CHECK(OpenMM_MLFFForce_getReplicaScale(force, 1, &scale, &error) == OpenMM_MLFF_Success && scale == 0.5);

    CHECK(strcmp(OpenMM_MLFFForce_getEnergyScaleParameter(force), "") == 0);
    CHECK(OpenMM_MLFFForce_setEnergyScaleParameter(force, "lambda", &error) == OpenMM_MLFF_Success);
    CHECK(strcmp(OpenMM_MLFFForce_getEnergyScaleParameter(force), "lambda") == 0);
    CHECK(OpenMM_MLFFForce_usesPeriodicBoundaryConditions(force) == OpenMM_False);
    OpenMM_MLFFForce_setUsesPeriodicBoundaryConditions(force, OpenMM_True);
    CHECK(OpenMM_MLFFForce_usesPeriodicBoundaryConditions(force) == OpenMM_True);
    CHECK(OpenMM_Force_usesPeriodicBoundaryConditions(OpenMM_MLFFForce_asForce(force)) == OpenMM_True);
    CHECK(OpenMM_MLFFForce_getUseTabulatedFilters(force) == OpenMM_False);
    OpenMM_MLFFForce_setUseTabulatedFilters(force, OpenMM_True);
    CHECK(OpenMM_MLFFForce_getUseTabulatedFilters(force) == OpenMM_True);
    OpenMM_Force_setForceGroup(OpenMM_MLFFForce_asForce(force), 4);
    CHECK(OpenMM_Force_getForceGroup(OpenMM_MLFFForce_asForce(force)) == 4);

    /* The bytes make an equal force. */
    size_t length = 0;
    const void* bytes = OpenMM_MLFFForce_getModelBytes(force, &length);
    CHECK(bytes != NULL && length > 0);
    OpenMM_MLFFForce* fromBytes = OpenMM_MLFFForce_createFromBytes(bytes, length, &error);
    CHECK(fromBytes != NULL);
    CHECK(strcmp(OpenMM_MLFFForce_getModelPath(fromBytes), "") == 0);
    CHECK(OpenMM_MLFFForce_getCutoff(fromBytes) == OpenMM_MLFFForce_getCutoff(force));
    OpenMM_MLFFForce_destroy(fromBytes);

    /* Errors, each with its message. */
    CHECK_FAILS(OpenMM_MLFFForce_addParticle(force, 0, 11, 0, NULL, &error), error, OpenMM_MLFF_Failure,
                "atomic number 11 of particle 0 is not known to the model (it knows 0 to 10)");
    CHECK_FAILS(OpenMM_MLFFForce_addParticle(force, -1, 6, 0, NULL, &error), error, OpenMM_MLFF_Failure,
                "particle index -1 is negative");
    CHECK_FAILS(OpenMM_MLFFForce_addParticle(force, 0, 6, -2, NULL, &error), error, OpenMM_MLFF_Failure,
                "replica -2 of particle 0 is negative");
    CHECK_FAILS(OpenMM_MLFFForce_getParticleParameters(force, 2, NULL, NULL, NULL, &error), error,
                OpenMM_MLFF_Failure, "ML particle index 2 is out of range (the force has 2 particles)");
    CHECK_FAILS(OpenMM_MLFFForce_setParticleParameters(force, 0, 0, 99, 0, &error), error, OpenMM_MLFF_Failure,
                "atomic number 99");
    CHECK_FAILS(OpenMM_MLFFForce_setReplicaScale(force, -1, 1.0, &error), error, OpenMM_MLFF_Failure,
                "replica -1 is negative");
    CHECK_FAILS(OpenMM_MLFFForce_setReplicaScale(force, 0, NAN, &error), error, OpenMM_MLFF_Failure,
                "not finite");
    CHECK_FAILS(OpenMM_MLFFForce_getReplicaScale(force, -1, &scale, &error), error, OpenMM_MLFF_Failure,
                "replica -1 is negative");
    CHECK_FAILS(OpenMM_MLFFForce_getReplicaScale(force, 0, NULL, &error), error, OpenMM_MLFF_InvalidArgument,
                "scale is NULL");
    CHECK_FAILS(OpenMM_MLFFForce_setEnergyScaleParameter(force, NULL, &error), error, OpenMM_MLFF_InvalidArgument,
                "name is NULL");
    CHECK_FAILS(OpenMM_MLFFForce_addParticle(NULL, 0, 6, 0, NULL, &error), error, OpenMM_MLFF_InvalidArgument,
                "force is NULL");
    /* A failed call left the force as it was. */
    CHECK(OpenMM_MLFFForce_getNumParticles(force) == 2);
    CHECK(OpenMM_MLFFForce_addParticle(force, 0, 11, 0, NULL, NULL) == OpenMM_MLFF_Failure);

    /* A successful call leaves the error as it was. */
    error.status = OpenMM_MLFF_OutOfMemory;
    strcpy(error.message, "untouched");
    CHECK(OpenMM_MLFFForce_setReplicaScale(force, 0, 2.0, &error) == OpenMM_MLFF_Success);
    CHECK(error.status == OpenMM_MLFF_OutOfMemory && strcmp(error.message, "untouched") == 0);

    /* NULL forces: neutral answers, no crash. */
    CHECK(OpenMM_MLFFForce_getNumParticles(NULL) == 0);
    CHECK(OpenMM_MLFFForce_getCutoff(NULL) == 0.0);
    CHECK(strcmp(OpenMM_MLFFForce_getEnergyScaleParameter(NULL), "") == 0);
    CHECK(OpenMM_MLFFForce_fromForce(NULL) == NULL);
    OpenMM_MLFFForce_destroy(NULL);

    OpenMM_MLFFForce_destroy(force);
}

static void testParticlesAgainstTheSystem(const char* modelPath) {
    OpenMM_MLFFError error;
    OpenMM_MLFFForce* force = OpenMM_MLFFForce_create(modelPath, &error);
    CHECK(force != NULL);
    if (force == NULL)
        return;
    OpenMM_System* system = OpenMM_System_create();
    OpenMM_System_addParticle(system, 1.0);
    OpenMM_System_addParticle(system, 1.0);
    OpenMM_MLFFForce_addParticle(force, 1, 6, 0, NULL, &error);
    OpenMM_MLFFForce_addParticle(force, 0, 1, 0, NULL, &error);
    CHECK(OpenMM_MLFFForce_checkParticles(force, system, &error) == OpenMM_MLFF_Success);
    OpenMM_MLFFForce_addParticle(force, 1, 8, 1, NULL, &error);
    CHECK_FAILS(OpenMM_MLFFForce_checkParticles(force, system, &error), error, OpenMM_MLFF_Failure,
                "particle 1 was added twice (ML particles 0 and 2)");
    OpenMM_MLFFForce_setParticleParameters(force, 2, 2, 8, 1, &error);
    CHECK_FAILS(OpenMM_MLFFForce_checkParticles(force, system, &error), error, OpenMM_MLFF_Failure,
                "ML particle 2 refers to particle 2, which is out of range (the System has 2 particles)");
    CHECK_FAILS(OpenMM_MLFFForce_checkParticles(force, NULL, &error), error, OpenMM_MLFF_InvalidArgument,
                "system is NULL");
    OpenMM_System_destroy(system);
    OpenMM_MLFFForce_destroy(force);
}

/* Ethanol twice, as replicas 0 and 1 with scales 1 and 0.5: the System owns the force. */
static void testInAContext(const char* modelPath) {
    OpenMM_MLFFError error;
    OpenMM_MLFFForce* force = OpenMM_MLFFForce_create(modelPath, &error);
    CHECK(force != NULL);
    if (force == NULL)
        return;
    OpenMM_System* system = OpenMM_System_create();
    OpenMM_Vec3Array* positions = OpenMM_Vec3Array_create(0);
    for (int replica = 0; replica < 2; replica++)
        for (int i = 0; i < ETHANOL_ATOMS; i++) {
            const int particle = OpenMM_System_addParticle(system, 1.0);
            CHECK(OpenMM_MLFFForce_addParticle(force, particle, ethanolZ[i], replica, NULL, &error) ==
                  OpenMM_MLFF_Success);
            /* The second copy is stretched a little so that the replicas differ. */
            const double stretch = replica == 0 ? 0.1 : 0.105;
            const OpenMM_Vec3 position = {ethanolAngstrom[i][0] * stretch, ethanolAngstrom[i][1] * stretch,
                                          ethanolAngstrom[i][2] * stretch};
            OpenMM_Vec3Array_append(positions, position);
        }
    CHECK(OpenMM_MLFFForce_setReplicaScale(force, 1, 0.5, &error) == OpenMM_MLFF_Success);
    CHECK(OpenMM_MLFFForce_checkParticles(force, system, &error) == OpenMM_MLFF_Success);
    OpenMM_System_addForce(system, OpenMM_MLFFForce_asForce(force));
    CHECK(OpenMM_MLFFForce_fromForce(OpenMM_System_getForce(system, 0)) == force);
    OpenMM_HarmonicBondForce* bonds = OpenMM_HarmonicBondForce_create();
    OpenMM_System_addForce(system, (OpenMM_Force*) bonds);
    CHECK(OpenMM_MLFFForce_fromForce(OpenMM_System_getForce(system, 1)) == NULL);

    OpenMM_VerletIntegrator* integrator = OpenMM_VerletIntegrator_create(0.0005);
    OpenMM_Context* context =
        OpenMM_Context_create_2(system, (OpenMM_Integrator*) integrator, OpenMM_Platform_getPlatformByName("Reference"));
    OpenMM_Context_setPositions(context, positions);

    OpenMM_State* state = OpenMM_Context_getState(context, OpenMM_State_Energy, 0);
    const double total = OpenMM_State_getPotentialEnergy(state);
    OpenMM_State_destroy(state);
    OpenMM_DoubleArray* energies = OpenMM_DoubleArray_create(5);
    CHECK(OpenMM_MLFFForce_getReplicaEnergies(force, context, energies, &error) == OpenMM_MLFF_Success);
    CHECK(OpenMM_DoubleArray_getSize(energies) == 2);
    const double e0 = OpenMM_DoubleArray_get(energies, 0), e1 = OpenMM_DoubleArray_get(energies, 1);
    CHECK(isfinite(e0) && isfinite(e1) && e0 != 0.0 && e1 != 2.0 * e0);
    CHECK(fabs(e0 + e1 - total) <= 1e-12 * fmax(1.0, fabs(total)));

    /* New scales reach the Context through updateParametersInContext. */
    CHECK(OpenMM_MLFFForce_setReplicaScale(force, 1, 1.0, &error) == OpenMM_MLFF_Success);
    CHECK(OpenMM_MLFFForce_updateParametersInContext(force, context, &error) == OpenMM_MLFF_Success);
    state = OpenMM_Context_getState(context, OpenMM_State_Energy, 0);
    const double rescaled = OpenMM_State_getPotentialEnergy(state);
    OpenMM_State_destroy(state);
    CHECK(fabs(rescaled - (e0 + 2.0 * e1)) <= 1e-12 * fmax(1.0, fabs(rescaled)));

    /* Failures of the context calls. */
    CHECK_FAILS(OpenMM_MLFFForce_getReplicaEnergies(force, NULL, energies, &error), error,
                OpenMM_MLFF_InvalidArgument, "context is NULL");
    CHECK_FAILS(OpenMM_MLFFForce_getReplicaEnergies(force, context, NULL, &error), error,
                OpenMM_MLFF_InvalidArgument, "energies is NULL");
    OpenMM_MLFFForce* stranger = OpenMM_MLFFForce_create(modelPath, &error);
    CHECK_FAILS(OpenMM_MLFFForce_getReplicaEnergies(stranger, context, energies, &error), error, OpenMM_MLFF_Failure,
                "");
    CHECK_FAILS(OpenMM_MLFFForce_updateParametersInContext(stranger, context, &error), error, OpenMM_MLFF_Failure,
                "");
    OpenMM_MLFFForce_destroy(stranger);

    /* An XML round trip through OpenMM's C API. */
    char* xml = OpenMM_XmlSerializer_serializeSystem(system);
    CHECK(strstr(xml, "MLFFForce") != NULL);
    OpenMM_System* restored = OpenMM_XmlSerializer_deserializeSystem(xml);
    free(xml);
    OpenMM_MLFFForce* copy = OpenMM_MLFFForce_fromForce(OpenMM_System_getForce(restored, 0));
    CHECK(copy != NULL && copy != force);
    if (copy != NULL) {
        size_t length = 0, copyLength = 0;
        const void* bytes = OpenMM_MLFFForce_getModelBytes(force, &length);
        const void* copyBytes = OpenMM_MLFFForce_getModelBytes(copy, &copyLength);
        CHECK(length == copyLength && memcmp(bytes, copyBytes, length) == 0);
        CHECK(OpenMM_MLFFForce_getNumParticles(copy) == 2 * ETHANOL_ATOMS);
        CHECK(OpenMM_MLFFForce_getNumReplicas(copy) == 2);
        CHECK(strcmp(OpenMM_MLFFForce_getModelPath(copy), modelPath) == 0);
    }
    OpenMM_System_destroy(restored);

    OpenMM_DoubleArray_destroy(energies);
    OpenMM_Context_destroy(context);
    OpenMM_VerletIntegrator_destroy(integrator);
    OpenMM_Vec3Array_destroy(positions);
    OpenMM_System_destroy(system); /* and the forces with it */
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL PLUGIN_DIR\n", argv[0]);
        return 2;
    }
    OpenMM_StringArray* loaded = OpenMM_Platform_loadPluginsFromDirectory(argv[2]);
    OpenMM_StringArray_destroy(loaded);
    testCreationErrors(argv[1]);
    testGettersAndSetters(argv[1]);
    testParticlesAgainstTheSystem(argv[1]);
    testInAContext(argv[1]);
    if (failures > 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
