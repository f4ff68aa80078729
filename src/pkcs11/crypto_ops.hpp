#pragma once
// Sign, verify, encrypt and decrypt on a session, and random: the *Init checks (key,
// mechanism, login, reload check), single- and multi-part data, and the
// PKCS#11 output conventions (length query with a NULL buffer,
// CKR_BUFFER_TOO_SMALL keeping the operation, any other outcome ending it).
// The work itself goes through the Router.

#include "ck.hpp"
#include "instance.hpp"

namespace preloadrun::pkcs11 {

enum class OpKind { sign, verify, encrypt, decrypt };

struct Output {
    CK_BYTE_PTR data;    // may be NULL: length query
    CK_ULONG_PTR length; // in: buffer size, out: length needed or written
};

void op_init(Instance& instance, Session& session, OpKind kind, const CK_MECHANISM* mechanism,
             CK_OBJECT_HANDLE key);
// C_Sign, C_Encrypt, C_Decrypt.
void op_single(Instance& instance, Session& session, OpKind kind,
               std::span<const std::uint8_t> input, Output output);
// C_SignUpdate, C_VerifyUpdate.
void op_update(Session& session, OpKind kind, std::span<const std::uint8_t> input);
// C_EncryptUpdate, C_DecryptUpdate. AES-ECB, -CBC, -CBC-PAD and -CTR output
// every whole block they can (CBC-PAD decryption keeps the last block back
// for the final call); the other mechanisms collect the data and output
// nothing until the final call. A NULL output buffer asks the length only
// (an upper bound): nothing is consumed.
void op_update_crypt(Instance& instance, Session& session, OpKind kind,
                     std::span<const std::uint8_t> input, Output output);
// C_SignFinal, C_EncryptFinal, C_DecryptFinal.
void op_final(Instance& instance, Session& session, OpKind kind, Output output);
// C_Verify and C_VerifyFinal (input empty: the data came by C_VerifyUpdate).
void op_verify(Instance& instance, Session& session, std::span<const std::uint8_t> data,
               std::span<const std::uint8_t> signature);
// C_GenerateRandom: `length` bytes from any usable module.
Bytes random_bytes(Instance& instance, std::size_t length);

} // namespace preloadrun::pkcs11
