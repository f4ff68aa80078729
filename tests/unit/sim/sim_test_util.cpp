#include "sim_test_util.hpp"

#include "preloadrun/common/ossl.hpp"
#include "preloadrun/hsm/digest.hpp"

#include <cstring>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdexcept>
#include <sys/stat.h>
#include <thread>

namespace simtest {

namespace {

using preloadrun::ossl::Pkey;
using Ctx = preloadrun::ossl::PkeyCtx;

Pkey public_key(const Bytes& spki) {
    const unsigned char* p = spki.data();
    Pkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
    if (!key) {
        throw std::runtime_error("bad SubjectPublicKeyInfo");
    }
    return key;
}

Ctx verify_ctx(EVP_PKEY* key) {
    Ctx ctx(EVP_PKEY_CTX_new(key, nullptr));
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1) {
        throw std::runtime_error("verify init");
    }
    return ctx;
}

} // namespace

std::unique_ptr<preloadrun::sim::World> make_world(const std::filesystem::path& dir,
                                                   const preloadrun::sim::WorldLimits& limits) {
    return std::make_unique<preloadrun::sim::World>(world_options(dir, limits));
}

preloadrun::sim::WorldOptions world_options(const std::filesystem::path& dir,
                                            const preloadrun::sim::WorldLimits& limits) {
    preloadrun::sim::WorldOptions options;
    options.dir = dir;
    options.kdf_iterations = kFastKdf;
    options.limits = limits;
    return options;
}

preloadrun::sim::SimulatedModule& simulated(preloadrun::sim::Fleet& fleet, std::uint32_t number) {
    return dynamic_cast<preloadrun::sim::SimulatedModule&>(fleet.module(number));
}

Bytes digest(preloadrun::hsm::Hash hash, const Bytes& data) {
    if (hash == preloadrun::hsm::Hash::none) {
        return data;
    }
    const EVP_MD* md = preloadrun::hsm::evp_md(hash);
    Bytes out(static_cast<std::size_t>(EVP_MD_get_size(md)));
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &len, md, nullptr);
    return out;
}

Bytes sha256_digest_info(const Bytes& d) {
    static const std::uint8_t prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                          0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                          0x01, 0x05, 0x00, 0x04, 0x20};
    Bytes out(sizeof prefix + d.size());
    std::copy(std::begin(prefix), std::end(prefix), out.begin());
    std::copy(d.begin(), d.end(), out.begin() + static_cast<std::ptrdiff_t>(sizeof prefix));
    return out;
}

bool openssl_verify_pkcs1(const Bytes& spki, const Bytes& d, const Bytes& sig) {
    auto key = public_key(spki);
    auto ctx = verify_ctx(key.get());
    EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING);
    EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256());
    return EVP_PKEY_verify(ctx.get(), sig.data(), sig.size(), d.data(), d.size()) == 1;
}

bool openssl_verify_pss(const Bytes& spki, const Bytes& d, const Bytes& sig, int salt_len) {
    auto key = public_key(spki);
    auto ctx = verify_ctx(key.get());
    EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256());
    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256());
    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), salt_len);
    return EVP_PKEY_verify(ctx.get(), sig.data(), sig.size(), d.data(), d.size()) == 1;
}

bool openssl_verify_ecdsa_raw(const Bytes& spki, const Bytes& d, const Bytes& raw) {
    auto key = public_key(spki);
    const std::size_t half = raw.size() / 2;
    ECDSA_SIG* sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, BN_bin2bn(raw.data(), static_cast<int>(half), nullptr),
                   BN_bin2bn(raw.data() + half, static_cast<int>(half), nullptr));
    unsigned char* der = nullptr;
    int len = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    auto ctx = verify_ctx(key.get());
    bool ok =
        EVP_PKEY_verify(ctx.get(), der, static_cast<std::size_t>(len), d.data(), d.size()) == 1;
    OPENSSL_free(der);
    return ok;
}

Bytes openssl_encrypt_oaep(const Bytes& spki, const Bytes& data, const Bytes& label) {
    auto key = public_key(spki);
    Ctx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    EVP_PKEY_encrypt_init(ctx.get());
    EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256());
    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256());
    if (!label.empty()) {
        auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(label.size()));
        std::memcpy(copy, label.data(), label.size());
        EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), copy, static_cast<int>(label.size()));
    }
    std::size_t len = 0;
    EVP_PKEY_encrypt(ctx.get(), nullptr, &len, data.data(), data.size());
    Bytes out(len);
    if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, data.data(), data.size()) != 1) {
        throw std::runtime_error("OAEP encrypt");
    }
    out.resize(len);
    return out;
}

Bytes openssl_rsa_raw(const Bytes& spki, const Bytes& block) {
    auto key = public_key(spki);
    Ctx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    EVP_PKEY_encrypt_init(ctx.get());
    EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_NO_PADDING);
    std::size_t len = block.size();
    Bytes out(len);
    if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, block.data(), block.size()) != 1) {
        throw std::runtime_error("raw RSA");
    }
    out.resize(len);
    return out;
}

mode_t file_mode(const std::filesystem::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        return 0;
    }
    return st.st_mode & 07777;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return condition();
}

} // namespace simtest
