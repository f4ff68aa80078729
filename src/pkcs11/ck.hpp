#pragma once
// The PKCS#11 types (preloadrun/pkcs11/cryptoki.hpp) and the one exception
// type of the module.

#include "preloadrun/pkcs11/cryptoki.hpp"

#include <stdexcept>
#include <string>

namespace preloadrun::pkcs11 {

// A PKCS#11 outcome decided by the module's own logic (bad arguments, wrong
// state, ...). Thrown inside the module, turned into its CK_RV by guard().
// `reported`: the failure was told already (a notice), guard() logs it no
// second time.
class CkError : public std::runtime_error {
public:
    enum class Reported { no, yes };
    explicit CkError(CK_RV rv, const std::string& why = {}, Reported reported = Reported::no)
        : std::runtime_error(why), rv_(rv), reported_(reported == Reported::yes) {}
    CK_RV rv() const noexcept { return rv_; }
    bool reported() const noexcept { return reported_; }

private:
    CK_RV rv_;
    bool reported_;
};

// Throws CkError(CKR_ARGUMENTS_BAD) when `p` is null.
template <class T> T* require_arg(T* p, const char* what) {
    if (p == nullptr) {
        throw CkError(CKR_ARGUMENTS_BAD, std::string(what) + " is NULL");
    }
    return p;
}

} // namespace preloadrun::pkcs11
