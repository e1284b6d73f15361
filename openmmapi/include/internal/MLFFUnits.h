#ifndef OPENMM_MLFF_UNITS_H_
#define OPENMM_MLFF_UNITS_H_

// Conversions between the model's units (Å, eV) and OpenMM's (nm, kJ/mol), exact by the
// SI definitions: 1 eV = e * N_A / 1000 kJ/mol with e = 1.602176634e-19 C and
// N_A = 6.02214076e23 /mol.

namespace MLFFPlugin {
namespace MLFFUnits {

constexpr double KJPerMolPerEV = 96.48533212331002;
constexpr double AngstromPerNm = 10.0;
/** eV/Å to kJ/mol/nm. */
constexpr double ForceToOpenMM = KJPerMolPerEV * AngstromPerNm;

} // namespace MLFFUnits
} // namespace MLFFPlugin

#endif // OPENMM_MLFF_UNITS_H_
