#pragma once
// C_Initialize and C_Finalize: the one process-wide Instance, the four forms
// of initialise arguments, and fork safety. A child process (pid differs from
// the initialising one) sees the module as not initialised, and its
// C_Initialize builds a fresh Instance; the parent's state is left untouched
// in the child (never destroyed there: its locks may be held by threads that
// do not exist in the child, its connections are the parent's).

#include "ck.hpp"
#include "instance.hpp"

#include <memory>

namespace preloadrun::pkcs11 {

// Throws CkError (CKR_ARGUMENTS_BAD, CKR_CANT_LOCK,
// CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_NEED_TO_CREATE_THREADS, ...).
void initialize(CK_VOID_PTR args);
void finalize(CK_VOID_PTR reserved);

// The initialised Instance; throws CkError(CKR_CRYPTOKI_NOT_INITIALIZED).
std::shared_ptr<Instance> current();

} // namespace preloadrun::pkcs11
