#ifndef OPENMM_MLFF_BASE64_H_
#define OPENMM_MLFF_BASE64_H_

// Base64 (RFC 4648, with padding): how a serialized MLFFForce embeds its model file's bytes.

#include <string>

namespace MLFFPlugin {

std::string base64Encode(const std::string& bytes);

/** Decodes `text` into *bytes; returns false (leaving *bytes unspecified) if it is not valid base64. */
bool base64Decode(const std::string& text, std::string* bytes);

} // namespace MLFFPlugin

#endif // OPENMM_MLFF_BASE64_H_
