#include "Base64.h"

#include <cstdint>

namespace MLFFPlugin {

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64Encode(const std::string& bytes) {
    std::string text;
    text.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                              static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                              static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
        for (int shift = 18; shift >= 0; shift -= 6)
            text += alphabet[(group >> shift) & 63];
    }
    size_t rest = bytes.size() - i;
    if (rest > 0) {
        std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
        if (rest == 2)
            group |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
        text += alphabet[(group >> 18) & 63];
        text += alphabet[(group >> 12) & 63];
        text += rest == 2 ? alphabet[(group >> 6) & 63] : '=';
        text += '=';
    }
    return text;
}

static int decodeDigit(char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

bool base64Decode(const std::string& text, std::string* bytes) {
    if (text.size() % 4 != 0)
        return false;
    bytes->clear();
    bytes->reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        bool last = i + 4 == text.size();
        int padding = 0;
        if (last && text[i + 3] == '=')
            padding = text[i + 2] == '=' ? 2 : 1;
        std::uint32_t group = 0;
        for (size_t j = 0; j < 4; j++) {
            int digit = 0;
            if (j < static_cast<size_t>(4 - padding)) {
                digit = decodeDigit(text[i + j]);
                if (digit < 0)
                    return false;
            }
            group = group << 6 | static_cast<std::uint32_t>(digit);
        }
        bytes->push_back(static_cast<char>((group >> 16) & 255));
        if (padding < 2)
            bytes->push_back(static_cast<char>((group >> 8) & 255));
        if (padding < 1)
            bytes->push_back(static_cast<char>(group & 255));
    }
    return true;
}

} // namespace MLFFPlugin
