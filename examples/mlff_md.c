/*
 * mlff_md: molecular dynamics with MLFFForce through OpenMM's C API.
 *
 *   mlff_md MODEL [PLUGIN_DIR] [STEPS]
 *
 * Builds a System of two structures, an ethanol and a water molecule, as two replicas of one
 * MLFFForce (replicas never interact), integrates STEPS (default 300) Langevin steps of 0.5 fs
 * at 300 K on the Reference platform, and prints the energies every 50 steps and the
 * per-replica ML energies at the end. MODEL is a model file; PLUGIN_DIR holds the plugin's
 * kernels (libOpenMMMLFFReference.so) when they are not installed in OpenMM's plugin folder.
 * Exits non-zero on any error or when an energy stops being finite.
 */
#include "OpenMMCWrapper.h"
#include "OpenMMMLFFCWrapper.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    int atomicNumber;
    double mass;      /* Da */
    double x, y, z;   /* Å */
    int replica;
} Atom;

/* Ethanol (replica 0) and water (replica 1); the water sits 1 nm away, though being another
 * replica it would not interact with the ethanol at any distance. */
static const Atom atoms[] = {
    {6, 12.011, 1.1879, -0.3829, 0.0000, 0},
    {6, 12.011, 0.0000, 0.5526, 0.0000, 0},
    {8, 15.999, -1.1867, -0.2472, 0.0000, 0},
    {1, 1.008, -1.9237, 0.3850, 0.0000, 0},
    {1, 1.008, 2.1392, 0.1573, 0.0000, 0},
    {1, 1.008, 1.1523, -1.0239, 0.8804, 0},
    {1, 1.008, 1.1523, -1.0239, -0.8804, 0},
    {1, 1.008, 0.0370, 1.2014, 0.8797, 0},
    {1, 1.008, 0.0370, 1.2014, -0.8797, 0},
    {8, 15.999, 10.0000, 0.0000, 0.0000, 1},
    {1, 1.008, 10.9572, 0.0000, 0.0000, 1},
    {1, 1.008, 9.7601, 0.9266, 0.0000, 1},
};
static const int numAtoms = (int) (sizeof(atoms) / sizeof(atoms[0]));

static const double temperature = 300.0;  /* K */
static const double friction = 1.0;       /* 1/ps */
static const double stepSize = 0.0005;    /* ps */
static const int reportInterval = 50;

/* Prints the step's energies (kJ/mol); 0 when they are finite. */
static int reportEnergies(OpenMM_Context* context, int step) {
    OpenMM_State* state = OpenMM_Context_getState(context, OpenMM_State_Energy, 0);
    const double potential = OpenMM_State_getPotentialEnergy(state);
    const double kinetic = OpenMM_State_getKineticEnergy(state);
    OpenMM_State_destroy(state);
    printf("%6d %16.6f %16.6f %16.6f\n", step, potential, kinetic, potential + kinetic);
    if (!isfinite(potential) || !isfinite(kinetic)) {
        fprintf(stderr, "mlff_md: the energy is not finite at step %d\n", step);
        return 1;
    }
    return 0;
}

/* Prints each replica's ML energy and checks that they add up to the potential energy. */
static int reportReplicaEnergies(const OpenMM_MLFFForce* force, OpenMM_Context* context) {
    OpenMM_MLFFError error;
    OpenMM_DoubleArray* energies = OpenMM_DoubleArray_create(0);
    if (OpenMM_MLFFForce_getReplicaEnergies(force, context, energies, &error) != OpenMM_MLFF_Success) {
        fprintf(stderr, "mlff_md: %s\n", error.message);
        OpenMM_DoubleArray_destroy(energies);
        return 1;
    }
    double sum = 0.0;
    for (int replica = 0; replica < OpenMM_DoubleArray_getSize(energies); replica++) {
        const double energy = OpenMM_DoubleArray_get(energies, replica);
        printf("replica %d: ML energy %.6f kJ/mol\n", replica, energy);
        sum += energy;
    }
    OpenMM_DoubleArray_destroy(energies);

    OpenMM_State* state = OpenMM_Context_getState(context, OpenMM_State_Energy, 0);
    const double potential = OpenMM_State_getPotentialEnergy(state);
    OpenMM_State_destroy(state);
    /* The MLFFForce is the only force, so its replicas make up the whole potential energy. */
    if (fabs(sum - potential) > 1e-9 * fmax(1.0, fabs(potential))) {
        fprintf(stderr, "mlff_md: the replica energies sum to %.12g, the potential energy is %.12g\n", sum, potential);
        return 1;
    }
    printf("the replica energies sum to the potential energy\n");
    return 0;
}

/* Adds the particles to the System and the force; the System's particle i is atoms[i]. */
static int addAtoms(OpenMM_System* system, OpenMM_MLFFForce* force, OpenMM_Vec3Array* positions) {
    OpenMM_MLFFError error;
    for (int i = 0; i < numAtoms; i++) {
        const int particle = OpenMM_System_addParticle(system, atoms[i].mass);
        if (OpenMM_MLFFForce_addParticle(force, particle, atoms[i].atomicNumber, atoms[i].replica, NULL, &error) !=
            OpenMM_MLFF_Success) {
            fprintf(stderr, "mlff_md: %s\n", error.message);
            return 1;
        }
        const OpenMM_Vec3 position = {atoms[i].x * OpenMM_NmPerAngstrom, atoms[i].y * OpenMM_NmPerAngstrom,
                                      atoms[i].z * OpenMM_NmPerAngstrom};
        OpenMM_Vec3Array_append(positions, position);
    }
    return 0;
}

static void loadPlugins(const char* directory) {
    OpenMM_StringArray* loaded = OpenMM_Platform_loadPluginsFromDirectory(directory);
    OpenMM_StringArray_destroy(loaded);
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL [PLUGIN_DIR] [STEPS]\n", argv[0]);
        return 2;
    }
    const char* modelPath = argv[1];
    const int steps = argc > 3 ? atoi(argv[3]) : 300;
    if (steps <= 0) {
        fprintf(stderr, "mlff_md: STEPS must be a positive number, not '%s'\n", argv[3]);
        return 2;
    }
    loadPlugins(OpenMM_Platform_getDefaultPluginsDirectory());
    if (argc > 2)
        loadPlugins(argv[2]);

    OpenMM_MLFFError error;
    OpenMM_MLFFForce* force = OpenMM_MLFFForce_create(modelPath, &error);
    if (force == NULL) {
        fprintf(stderr, "mlff_md: %s\n", error.message);
        return 1;
    }
    printf("model %s: cutoff %.3f nm, atomic numbers up to %d\n", modelPath, OpenMM_MLFFForce_getCutoff(force),
           OpenMM_MLFFForce_getMaxAtomicNumber(force));

    OpenMM_System* system = OpenMM_System_create();
    OpenMM_Vec3Array* positions = OpenMM_Vec3Array_create(0);
    int status = addAtoms(system, force, positions);
    /* OpenMM_Context_create would abort on particles the System lacks: check them first. */
    if (status == 0 && OpenMM_MLFFForce_checkParticles(force, system, &error) != OpenMM_MLFF_Success) {
        fprintf(stderr, "mlff_md: %s\n", error.message);
        status = 1;
    }
    if (status != 0) {
        OpenMM_Vec3Array_destroy(positions);
        OpenMM_System_destroy(system);
        OpenMM_MLFFForce_destroy(force);
        return 1;
    }
    /* From here on the System owns the force. */
    OpenMM_System_addForce(system, OpenMM_MLFFForce_asForce(force));
    printf("%d atoms in %d replicas\n", OpenMM_MLFFForce_getNumParticles(force), OpenMM_MLFFForce_getNumReplicas(force));

    OpenMM_LangevinMiddleIntegrator* integrator = OpenMM_LangevinMiddleIntegrator_create(temperature, friction, stepSize);
    OpenMM_LangevinMiddleIntegrator_setRandomNumberSeed(integrator, 2024);
    OpenMM_Platform* platform = OpenMM_Platform_getPlatformByName("Reference");
    OpenMM_Context* context = OpenMM_Context_create_2(system, (OpenMM_Integrator*) integrator, platform);
    OpenMM_Context_setPositions(context, positions);
    OpenMM_Context_setVelocitiesToTemperature(context, temperature, 2024);

    printf("%6s %16s %16s %16s   (kJ/mol)\n", "step", "potential", "kinetic", "total");
    status = reportEnergies(context, 0);
    for (int step = 0; status == 0 && step < steps; step += reportInterval) {
        const int chunk = steps - step < reportInterval ? steps - step : reportInterval;
        OpenMM_LangevinMiddleIntegrator_step(integrator, chunk);
        status = reportEnergies(context, step + chunk);
    }
    if (status == 0)
        status = reportReplicaEnergies(force, context);

    OpenMM_Context_destroy(context);
    OpenMM_LangevinMiddleIntegrator_destroy(integrator);
    OpenMM_Vec3Array_destroy(positions);
    OpenMM_System_destroy(system);  /* frees the force too */
    return status;
}
