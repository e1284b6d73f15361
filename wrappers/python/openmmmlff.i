// The Python module openmmmlff: MLFFForce for the OpenMM Python package. The class is declared
// here (not %include'd from MLFFForce.h) so that the Python API is chosen on purpose:
//   - the constructor takes a path (str, bytes or os.PathLike) or, with MLFFForce.ModelBytes,
//     the model file's bytes; getModelBytes() returns bytes;
//   - getParticleParameters returns [particle, atomicNumber, replica];
//   - getReplicaEnergies returns a numpy array of float64, kJ/mol;
//   - C++ exceptions become openmm.OpenMMException with the C++ message, as in OpenMM's module;
//   - cast()/isinstance() turn the openmm.Force of a System (a deserialized one, say) back into an
//     MLFFForce.
// Plain Python values throughout (nm, kJ/mol), no openmm.unit quantities.
%module openmmmlff

%pythonbegin %{
import os as _os

import numpy as _np
import openmm as _openmm
%}

%import(module="openmm") "swig/OpenMMSwigHeaders.i"
%include "swig/typemaps.i"
%include <std_string.i>
%include <typemaps.i>

%{
#include "MLFFForce.h"
// Every class OpenMMSwigHeaders.i names, as the OpenMM module itself is compiled.
#include "OpenMM.h"
#include "OpenMMAmoeba.h"
#include "OpenMMDrude.h"
#include "openmm/RPMDIntegrator.h"
#include "openmm/RPMDMonteCarloBarostat.h"
#include "openmm/OpenMMException.h"
%}

// Raise openmm.OpenMMException, so callers catch plugin errors as they catch OpenMM's.
%define MLFF_RAISE_OPENMM_EXCEPTION(message)
    PyObject* openmmModule = PyImport_AddModule("openmm");
    PyObject* openmmException = openmmModule ? PyObject_GetAttrString(openmmModule, "OpenMMException") : NULL;
    PyErr_SetString(openmmException ? openmmException : PyExc_Exception, message);
    Py_XDECREF(openmmException);
    SWIG_fail;
%enddef

%exception {
    try {
        $action
    } catch (std::exception& e) {
        MLFF_RAISE_OPENMM_EXCEPTION(e.what())
    }
}

// Evaluating the network can take a while: let other Python threads run meanwhile (no Python
// object is touched inside).
%exception MLFFPlugin::MLFFForce::getReplicaEnergies {
    PyThreadState* savedThreadState = PyEval_SaveThread();
    try {
        $action
    } catch (std::exception& e) {
        PyEval_RestoreThread(savedThreadState);
        MLFF_RAISE_OPENMM_EXCEPTION(e.what())
    }
    PyEval_RestoreThread(savedThreadState);
}

// The model: a path or the bytes of a file. Binary bytes must not go through str decoding.
%typemap(in) const std::string& model (std::string modelArgument) {
    PyObject* source = $input;
    PyObject* fsPath = NULL;  // a new reference, when the input is os.PathLike
    if (!PyBytes_Check(source) && !PyUnicode_Check(source)) {
        fsPath = PyOS_FSPath(source);  // sets TypeError for anything else
        if (fsPath == NULL)
            SWIG_fail;
        source = fsPath;
    }
    if (PyBytes_Check(source)) {
        modelArgument.assign(PyBytes_AS_STRING(source), static_cast<size_t>(PyBytes_GET_SIZE(source)));
    } else {
        Py_ssize_t size = 0;
        const char* text = PyUnicode_AsUTF8AndSize(source, &size);
        if (text == NULL) {
            Py_XDECREF(fsPath);
            SWIG_fail;
        }
        modelArgument.assign(text, static_cast<size_t>(size));
    }
    Py_XDECREF(fsPath);
    $1 = &modelArgument;
}
%typemap(freearg) const std::string& model ""  // the string lives in the wrapper's local
%typemap(typecheck, precedence=SWIG_TYPECHECK_STRING) const std::string& model {
    $1 = PyBytes_Check($input) || PyUnicode_Check($input) || PyObject_HasAttrString($input, "__fspath__");
}

%apply int& OUTPUT { int& particle, int& atomicNumber, int& replica };

// The per-replica energies as a Python list; the proxy below makes it a numpy array.
%typemap(out) std::vector<double> getReplicaEnergies {
    $result = PyList_New(static_cast<Py_ssize_t>($1.size()));
    if ($result == NULL)
        SWIG_fail;
    for (size_t i = 0; i < $1.size(); i++)
        PyList_SET_ITEM($result, static_cast<Py_ssize_t>(i), PyFloat_FromDouble($1[i]));
}
%pythonappend MLFFPlugin::MLFFForce::getReplicaEnergies %{
    val = _np.array(val, dtype=_np.float64)
%}

// cast() returns a view of the same C++ object: let it keep the original Python object (and so
// whoever owns the C++ force, a deserialized force say) alive.
%pythonappend MLFFPlugin::MLFFForce::cast %{
    val._castFrom = force
%}

%feature("autodoc", "1");
%feature("docstring") MLFFPlugin::MLFFForce::MLFFForce
"MLFFForce(model, source=MLFFForce.ModelFile): a model file's path (str, bytes or os.PathLike),
or with MLFFForce.ModelBytes the file's bytes. Raises openmm.OpenMMException naming the problem.";
%feature("docstring") MLFFPlugin::MLFFForce::getReplicaEnergies
"getReplicaEnergies(context) -> numpy.ndarray of float64, kJ/mol: each replica's energy, scaled as
in the total, of this force's last evaluation in `context` (evaluate the current state first,
e.g. with context.getState(getEnergy=True)).";
%feature("docstring") MLFFPlugin::MLFFForce::getParticleParameters
"getParticleParameters(index) -> [particle, atomicNumber, replica]";

namespace MLFFPlugin {

/**
 * A machine-learned force field acting on some particles of a System; see MLFFForce.h.
 * Energies kJ/mol, lengths nm.
 */
class MLFFForce : public OpenMM::Force {
public:
    enum ModelSource { ModelFile = 0, ModelBytes = 1 };

    MLFFForce(const std::string& model, ModelSource source = ModelFile);
    const std::string& getModelPath() const;
    double getCutoff() const;
    int getMaxAtomicNumber() const;

    int addParticle(int particle, int atomicNumber, int replica = 0);
    int getNumParticles() const;
    void getParticleParameters(int index, int& particle, int& atomicNumber, int& replica) const;
    void setParticleParameters(int index, int particle, int atomicNumber, int replica);
    int getNumReplicas() const;

    double getReplicaScale(int replica) const;
    void setReplicaScale(int replica, double scale);

    void setEnergyScaleParameter(const std::string& name);
    const std::string& getEnergyScaleParameter() const;

    void setUsesPeriodicBoundaryConditions(bool periodic);
    bool usesPeriodicBoundaryConditions() const;

    void setUseTabulatedFilters(bool tabulated);
    bool getUseTabulatedFilters() const;

    std::vector<double> getReplicaEnergies(OpenMM::Context& context) const;
    void updateParametersInContext(OpenMM::Context& context);

    %extend {
        /** The model file's bytes. */
        PyObject* getModelBytes() const {
            const std::string& bytes = self->getModelBytes();
            return PyBytes_FromStringAndSize(bytes.data(), static_cast<Py_ssize_t>(bytes.size()));
        }

        /** The MLFFForce that `force` is (from System.getForce, say); raises if it is another force. */
        static MLFFPlugin::MLFFForce& cast(OpenMM::Force& force) {
            MLFFPlugin::MLFFForce* mlffForce = dynamic_cast<MLFFPlugin::MLFFForce*>(&force);
            if (mlffForce == NULL)
                throw OpenMM::OpenMMException("MLFFForce.cast: the force is not an MLFFForce");
            return *mlffForce;
        }

        /** Whether `force` is an MLFFForce. */
        static bool isinstance(OpenMM::Force& force) {
            return dynamic_cast<MLFFPlugin::MLFFForce*>(&force) != NULL;
        }
    }
};

} // namespace MLFFPlugin

%pythoncode %{
def _loadPluginsFromEnvironment():
    """Load the plugin's kernels from $OPENMM_MLFF_PLUGIN_DIR when it is set: a build tree keeps
    them outside OpenMM's plugin folder (an installed plugin is loaded by `import openmm`)."""
    directory = _os.environ.get("OPENMM_MLFF_PLUGIN_DIR")
    if directory:
        _openmm.Platform.loadPluginsFromDirectory(directory)


_loadPluginsFromEnvironment()
%}
