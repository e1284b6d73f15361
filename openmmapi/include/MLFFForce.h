#ifndef OPENMM_MLFF_FORCE_H_
#define OPENMM_MLFF_FORCE_H_

#include "openmm/Context.h"
#include "openmm/Force.h"
#include "internal/windowsExportMLFF.h"

#include <string>
#include <vector>

namespace MLFFPlugin {

/**
 * A machine-learned force field (a model file of openmm-mlff, see docs/model-file.md)
 * acting on some particles of a System.
 *
 * Each ML particle belongs to a replica: the particles of one replica form one structure,
 * and particles of different replicas never interact, so many copies of a molecule can be
 * evaluated in one Context (for replica exchange, say). Particles not added to this force
 * are untouched by it, so ML/MM systems work.
 *
 * The energy is
 *     E = lambda * sum_r scale_r * E_r
 * where E_r is the model's energy of replica r (converted from eV to kJ/mol), scale_r a
 * per-replica factor (1 by default) and lambda an optional global Context parameter
 * (see setEnergyScaleParameter), 1 when none is set.
 */
class OPENMM_EXPORT_MLFF MLFFForce : public OpenMM::Force {
public:
    /** How the string given to the constructor is read. */
    enum ModelSource {
        ModelFile = 0,  /**< a path to a model file */
        ModelBytes = 1  /**< the bytes of a model file */
    };
    /**
     * Create an MLFFForce from a model file.
     *
     * @param model   a path to the model file, or its bytes when source is ModelBytes
     * @param source  how to read `model`
     * @throws OpenMM::OpenMMException naming the file and what is wrong with it
     */
    explicit MLFFForce(const std::string& model, ModelSource source = ModelFile);
    /** The bytes of the model file (a serialized System embeds them). */
    const std::string& getModelBytes() const;
    /** The path the model was read from, or "" when created from bytes. */
    const std::string& getModelPath() const;
    /** The model's cutoff in nm. */
    double getCutoff() const;
    /** The largest atomic number the model knows. */
    int getMaxAtomicNumber() const;

    /**
     * Add an ML particle.
     *
     * @param particle      the System's index of the particle
     * @param atomicNumber  its atomic number, in [0, getMaxAtomicNumber()]
     * @param replica       the replica (structure) it belongs to, >= 0
     * @return the index of the ML particle in this force
     */
    int addParticle(int particle, int atomicNumber, int replica = 0);
    int getNumParticles() const;
    void getParticleParameters(int index, int& particle, int& atomicNumber, int& replica) const;
    void setParticleParameters(int index, int particle, int atomicNumber, int replica);
    /** One more than the largest replica index of any particle (0 when there are none). */
    int getNumReplicas() const;

    /** The factor scale_r of replica r's energy (1 unless set). */
    double getReplicaScale(int replica) const;
    /** Set scale_r; in an existing Context it takes effect through updateParametersInContext(). */
    void setReplicaScale(int replica, double scale);

    /**
     * Name a global Context parameter lambda that multiplies the whole ML energy (default 1);
     * "" (the default) means none. The force then reports dE/dlambda as an energy parameter
     * derivative.
     */
    void setEnergyScaleParameter(const std::string& name);
    const std::string& getEnergyScaleParameter() const;

    void setUsesPeriodicBoundaryConditions(bool periodic);
    bool usesPeriodicBoundaryConditions() const;

    /**
     * Replace each block's radial filter network by a cubic Hermite table in distance
     * (faster, within a stated error of the exact network). Off by default.
     */
    void setUseTabulatedFilters(bool tabulated);
    bool getUseTabulatedFilters() const;

    /**
     * The per-replica energies E_r scaled as in the total (lambda * scale_r * E_r, kJ/mol) of
     * the last evaluation of this force in `context`; they sum to this force's energy.
     */
    std::vector<double> getReplicaEnergies(OpenMM::Context& context) const;

    /** Copy the replica scales into `context` (particles and the model cannot change there). */
    void updateParametersInContext(OpenMM::Context& context);

protected:
    OpenMM::ForceImpl* createImpl() const;

private:
    // The serialization proxy restores the model path of a force read back from XML.
    friend class MLFFForceProxy;
    struct ParticleInfo {
        int particle, atomicNumber, replica;
    };
    std::string modelBytes, modelPath;
    double cutoff;
    int maxAtomicNumber;
    std::vector<ParticleInfo> particles;
    std::vector<double> replicaScales;
    std::string energyScaleParameter;
    bool periodic = false;
    bool tabulatedFilters = false;
};

} // namespace MLFFPlugin

#endif /*OPENMM_MLFF_FORCE_H_*/
