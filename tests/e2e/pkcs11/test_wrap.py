"""C_WrapKey and C_UnwrapKey through the module, done by the HSMs. Every
wrapped key is checked against the Python `cryptography` package (known keys,
so known answers): what the module wraps, `cryptography` unwraps to the key's
value (or its PKCS#8), and what `cryptography` wraps, the module unwraps into
a key that computes what the original computes. Only a key made extractable
leaves the HSMs; the refusals give the codes PKCS#11 gives them. An unwrapped
token key is on every module of the fleet, and back on a cleared one.
"""

import json
import os
import sys

import pytest

from conftest import (PIN, PYKCS11_PRELUDE, client_env, run, serves_through_a_clear,
                      skip_under_asan)

pytestmark = skip_under_asan

PRELUDE = PYKCS11_PRELUDE + r"""
import struct
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding as apad, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives import padding

def secret(session, key_type, value, token=False, label="imported", extractable=False):
    return session.createObject([
        (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, key_type), (CKA_VALUE, value),
        (CKA_TOKEN, token), (CKA_LABEL, label), (CKA_EXTRACTABLE, extractable),
        (CKA_ENCRYPT, True), (CKA_DECRYPT, True), (CKA_WRAP, True), (CKA_UNWRAP, True)])

def flags(session, key, names):
    values = session.getAttributeValue(key, [getattr(PyKCS11, n) for n in names])
    return {n: bool(v) for n, v in zip(names, values)}

def aes(key, mode, plain, padded=False):
    if padded:
        p = padding.PKCS7(128).padder()
        plain = p.update(plain) + p.finalize()
    e = Cipher(algorithms.AES(key), mode).encryptor()
    return e.update(plain) + e.finalize()

def unpad(data):
    u = padding.PKCS7(128).unpadder()
    return u.update(data) + u.finalize()

def unwrap_template(cls, key_type, token=False, label="unwrapped", extra=()):
    return [(CKA_CLASS, cls), (CKA_KEY_TYPE, key_type), (CKA_TOKEN, token), (CKA_LABEL, label),
            (CKA_SIGN, True), (CKA_ENCRYPT, True), (CKA_DECRYPT, True)] + list(extra)

def no_such_handle():
    h = PyKCS11.LowLevel.CK_OBJECT_HANDLE()
    h.assign(999999)
    return h

def ecdsa_ok(public_key, digest, sig, hash_algorithm):
    # A raw r||s signature of a digest, checked by `cryptography`.
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature, Prehashed
    half = len(sig) // 2
    try:
        public_key.verify(encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                               int.from_bytes(sig[half:], "big")),
                          digest, ec.ECDSA(Prehashed(hash_algorithm)))
        return True
    except Exception:
        return False

def unwrap_ec(session, kek, kek_value, curve, token, label):
    # An EC key of `curve` made by `cryptography`, wrapped (RFC 5649) under
    # the known `kek_value`, unwrapped by the module: (its copy, the handle).
    known = ec.generate_private_key(curve)
    p8 = known.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    handle = session.unwrapKey(kek, keywrap.aes_key_wrap_with_padding(kek_value, p8),
                               unwrap_template(CKO_PRIVATE_KEY, CKK_EC, token, label),
                               Raw(CKM_AES_KEY_WRAP_PAD))
    return known, handle

def oaep_mechanism():
    return PyKCS11.RSAOAEPMechanism(CKM_SHA256, CKG_MGF1_SHA256)
"""

KNOWN_ANSWERS = PRELUDE + r"""
slot, session = card_session(pin=sys.argv[2])
token = sys.argv[3] == "token"
out = {}
kek_value = bytes(range(32))
iv = bytes(range(100, 116))
kek = secret(session, CKK_AES, kek_value, token, "kek")

# Secret keys the module wraps, unwrapped by `cryptography`.
value = bytes(range(50, 82))
target = secret(session, CKK_AES, value, token, "target", extractable=True)
wrap = lambda mech, k=target: bytes(session.wrapKey(kek, k, mech))
out["kw"] = keywrap.aes_key_unwrap(kek_value, wrap(Raw(CKM_AES_KEY_WRAP))) == value
out["kwp"] = keywrap.aes_key_unwrap_with_padding(kek_value, wrap(Raw(CKM_AES_KEY_WRAP_PAD))) == value
out["cbc_pad"] = wrap(Raw(CKM_AES_CBC_PAD, iv)) == aes(kek_value, modes.CBC(iv), value, True)
out["cbc"] = wrap(Raw(CKM_AES_CBC, iv)) == aes(kek_value, modes.CBC(iv), value)
out["ecb"] = wrap(Raw(CKM_AES_ECB)) == aes(kek_value, modes.ECB(), value)
mac_value = bytes(range(7, 27))   # 20 bytes: not whole 8-byte blocks
mac = secret(session, CKK_GENERIC_SECRET, mac_value, token, "mac", extractable=True)
out["kwp_generic"] = keywrap.aes_key_unwrap_with_padding(
    kek_value, wrap(Raw(CKM_AES_KEY_WRAP_PAD), mac)) == mac_value

# Private keys, wrapped as PKCS#8, the public key they carry that of the pair.
pub, priv = session.generateKeyPair(
    [(CKA_TOKEN, token), (CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107"))],
    [(CKA_TOKEN, token), (CKA_SIGN, True), (CKA_EXTRACTABLE, True), (CKA_LABEL, "ec-x")],
    PyKCS11.Mechanism(CKM_EC_KEY_PAIR_GEN))
der = keywrap.aes_key_unwrap_with_padding(kek_value, wrap(Raw(CKM_AES_KEY_WRAP_PAD), priv))
spki = bytes(session.getAttributeValue(pub, [CKA_PUBLIC_KEY_INFO])[0])
loaded = serialization.load_der_private_key(der, None)
out["ec_pkcs8"] = loaded.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki
rpub, rpriv = session.generateKeyPair(
    [(CKA_TOKEN, token), (CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01")],
    [(CKA_TOKEN, token), (CKA_SIGN, True), (CKA_DECRYPT, True), (CKA_EXTRACTABLE, True)],
    PyKCS11.Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN))
rder = unpad(Cipher(algorithms.AES(kek_value), modes.CBC(iv)).decryptor().update(
    wrap(Raw(CKM_AES_CBC_PAD, iv), rpriv)))
modulus = bytes(session.getAttributeValue(rpub, [CKA_MODULUS])[0])
rkey = serialization.load_der_private_key(rder, None)
out["rsa_pkcs8"] = rkey.public_key().public_numbers().n == int.from_bytes(modulus, "big")

# RSA wraps a secret key: the module's public key, `cryptography`'s copy of
# the private key (imported through C_CreateObject, so known).
rsa_known = rsa.generate_private_key(public_exponent=65537, key_size=2048)
n = rsa_known.private_numbers()
big = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")
known_priv = session.createObject([
    (CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_RSA), (CKA_TOKEN, token),
    (CKA_MODULUS, big(n.public_numbers.n)), (CKA_PUBLIC_EXPONENT, big(n.public_numbers.e)),
    (CKA_PRIVATE_EXPONENT, big(n.d)), (CKA_PRIME_1, big(n.p)), (CKA_PRIME_2, big(n.q)),
    (CKA_EXPONENT_1, big(n.dmp1)), (CKA_EXPONENT_2, big(n.dmq1)), (CKA_COEFFICIENT, big(n.iqmp)),
    (CKA_DECRYPT, True), (CKA_UNWRAP, True), (CKA_LABEL, "rsa-known")])
known_pub = session.findObjects([(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_LABEL, "rsa-known")])[0]
oaep = apad.OAEP(mgf=apad.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
out["rsa_oaep"] = rsa_known.decrypt(bytes(session.wrapKey(known_pub, target, oaep_mechanism())),
                                    oaep) == value
out["rsa_pkcs"] = rsa_known.decrypt(bytes(session.wrapKey(known_pub, target, Raw(CKM_RSA_PKCS))),
                                    apad.PKCS1v15()) == value

# What `cryptography` wraps, the module unwraps: the new key computes what
# the original does, and says it came from outside.
fresh = bytes(range(200, 232))
block = bytes(range(16))
want = aes(fresh, modes.ECB(), block)
unwrapped = {}
for name, mech, blob, extra in [
        ("kw", Raw(CKM_AES_KEY_WRAP), keywrap.aes_key_wrap(kek_value, fresh), ()),
        ("kwp", Raw(CKM_AES_KEY_WRAP_PAD), keywrap.aes_key_wrap_with_padding(kek_value, fresh), ()),
        ("cbc_pad", Raw(CKM_AES_CBC_PAD, iv), aes(kek_value, modes.CBC(iv), fresh, True), ()),
        ("ecb", Raw(CKM_AES_ECB), aes(kek_value, modes.ECB(), fresh), ((CKA_VALUE_LEN, 32),))]:
    k = session.unwrapKey(kek, blob, unwrap_template(CKO_SECRET_KEY, CKK_AES, token, "u-" + name,
                                                       extra), mech)
    unwrapped[name] = k
    out["unwrap_" + name] = bytes(session.encrypt(k, block, Raw(CKM_AES_ECB))) == want
k = unwrapped["kw"]
out["unwrapped_flags"] = flags(session, k, ["CKA_LOCAL", "CKA_EXTRACTABLE", "CKA_NEVER_EXTRACTABLE",
                                            "CKA_ALWAYS_SENSITIVE", "CKA_SENSITIVE", "CKA_TOKEN"])
kcv = aes(fresh, modes.ECB(), bytes(16))[:3]   # AES of a zero block, its first 3 bytes
out["check_value"] = bytes(session.getAttributeValue(k, [CKA_CHECK_VALUE])[0]) == kcv
out["unwrapped_value_len"] = session.getAttributeValue(k, [CKA_VALUE_LEN])[0]
ec_known, ek = unwrap_ec(session, kek, kek_value, ec.SECP384R1(), token, "u-ec")
digest = bytes(range(48))
out["unwrap_ec_signs"] = ecdsa_ok(ec_known.public_key(), digest,
                                  bytes(session.sign(ek, digest, Raw(CKM_ECDSA))), hashes.SHA384())
out["unwrap_ec_curve"] = bytes(session.getAttributeValue(ek, [CKA_EC_PARAMS])[0]).hex()
rp8 = rsa_known.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
rk = session.unwrapKey(kek, keywrap.aes_key_wrap_with_padding(kek_value, rp8),
                       unwrap_template(CKO_PRIVATE_KEY, CKK_RSA, token, "u-rsa"),
                       Raw(CKM_AES_KEY_WRAP_PAD))
secret_blob = rsa_known.public_key().encrypt(b"a secret message", oaep)
out["unwrap_rsa_decrypts"] = bytes(session.decrypt(rk, secret_blob, oaep_mechanism())) == \
    b"a secret message"
# RSA unwraps a secret key with the module's private key.
rk_aes = session.unwrapKey(known_priv, rsa_known.public_key().encrypt(fresh, oaep),
                           unwrap_template(CKO_SECRET_KEY, CKK_AES, token, "u-rsa-aes"),
                           oaep_mechanism())
out["unwrap_by_rsa"] = bytes(session.encrypt(rk_aes, block, Raw(CKM_AES_ECB))) == want
# Round trip through the module alone, a generated key never seen in the clear.
gen = session.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES),
                           (CKA_VALUE_LEN, 16), (CKA_TOKEN, token), (CKA_EXTRACTABLE, True)],
                          PyKCS11.Mechanism(CKM_AES_KEY_GEN))
again = session.unwrapKey(kek, bytes(session.wrapKey(kek, gen, Raw(CKM_AES_KEY_WRAP))),
                          unwrap_template(CKO_SECRET_KEY, CKK_AES, token, "again"),
                          Raw(CKM_AES_KEY_WRAP))
out["round_trip"] = bytes(session.encrypt(gen, block, Raw(CKM_AES_ECB))) == \
    bytes(session.encrypt(again, block, Raw(CKM_AES_ECB)))
out["generated_flags"] = flags(session, gen, ["CKA_LOCAL", "CKA_EXTRACTABLE",
                                              "CKA_NEVER_EXTRACTABLE"])

# Refusals, with the codes PKCS#11 gives them.
sealed = secret(session, CKK_AES, value, token, "sealed")            # not extractable
out["unextractable"] = rv_of(lambda: session.wrapKey(kek, sealed, Raw(CKM_AES_KEY_WRAP)))
out["sealed_flags"] = flags(session, sealed, ["CKA_EXTRACTABLE", "CKA_NEVER_EXTRACTABLE",
                                              "CKA_LOCAL"])
gen_sealed = session.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES),
                                  (CKA_VALUE_LEN, 16), (CKA_TOKEN, token)],
                                 PyKCS11.Mechanism(CKM_AES_KEY_GEN))
out["generated_sealed"] = rv_of(lambda: session.wrapKey(kek, gen_sealed, Raw(CKM_AES_KEY_WRAP)))
out["sealed_set"] = rv_of(lambda: session.setAttributeValue(sealed, [(CKA_EXTRACTABLE, True)]))
out["rsa_wraps_private"] = rv_of(lambda: session.wrapKey(known_pub, priv, oaep_mechanism()))
out["wrong_mechanism"] = rv_of(lambda: session.wrapKey(kek, target, Raw(CKM_AES_CTR, bytes(16))))
out["wrong_wrapping_type"] = rv_of(lambda: session.wrapKey(known_pub, target,
                                                           Raw(CKM_AES_KEY_WRAP)))
out["bad_wrapping_handle"] = rv_of(lambda: session.wrapKey(no_such_handle(), target, Raw(CKM_AES_KEY_WRAP)))
out["wrap_public_key"] = rv_of(lambda: session.wrapKey(kek, pub, Raw(CKM_AES_KEY_WRAP_PAD)))
out["ecb_private"] = rv_of(lambda: session.wrapKey(kek, priv, Raw(CKM_AES_ECB)))
tampered = bytearray(keywrap.aes_key_wrap(kek_value, fresh))
tampered[5] ^= 1
template = unwrap_template(CKO_SECRET_KEY, CKK_AES, token)
out["tampered"] = rv_of(lambda: session.unwrapKey(kek, bytes(tampered), template,
                                                  Raw(CKM_AES_KEY_WRAP)))
out["bad_length"] = rv_of(lambda: session.unwrapKey(kek, bytes(20), template,
                                                    Raw(CKM_AES_KEY_WRAP)))
out["incomplete"] = rv_of(lambda: session.unwrapKey(
    kek, keywrap.aes_key_wrap(kek_value, fresh), [(CKA_CLASS, CKO_SECRET_KEY)],
    Raw(CKM_AES_KEY_WRAP)))
out["not_that_type"] = rv_of(lambda: session.unwrapKey(
    kek, keywrap.aes_key_wrap(kek_value, fresh),
    unwrap_template(CKO_PRIVATE_KEY, CKK_EC, token), Raw(CKM_AES_KEY_WRAP)))
out["bad_unwrapping_handle"] = rv_of(lambda: session.unwrapKey(
    no_such_handle(), keywrap.aes_key_wrap(kek_value, fresh), template, Raw(CKM_AES_KEY_WRAP)))
# In the accelerator slot a token key is protected by the modules, which
# every user of the service may load: it cannot be extractable.
accel = lib.openSession(lib.getSlotList(tokenPresent=True)[0], CKF_SERIAL_SESSION | CKF_RW_SESSION)
out["accelerator_extractable"] = rv_of(lambda: accel.generateKey(
    [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_VALUE_LEN, 16),
     (CKA_TOKEN, True), (CKA_EXTRACTABLE, True)], PyKCS11.Mechanism(CKM_AES_KEY_GEN)))
accel_session_key = accel.generateKey(
    [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_VALUE_LEN, 16),
     (CKA_TOKEN, False), (CKA_EXTRACTABLE, True)], PyKCS11.Mechanism(CKM_AES_KEY_GEN))
out["accelerator_session_extractable"] = flags(accel, accel_session_key, ["CKA_EXTRACTABLE"])
listed = lib.getMechanismInfo(slot, "CKM_AES_KEY_WRAP_PAD").flags
out["mechanism_flags"] = bool(listed & CKF_WRAP) and bool(listed & CKF_UNWRAP)
print(json.dumps(out))
"""


def known_answers(world, module_path, where):
    r = run([sys.executable, "-c", KNOWN_ANSWERS, module_path, PIN, where], client_env(world))
    return json.loads(r.stdout)


@pytest.mark.parametrize("where", ["session", "token"])
def test_wrapped_and_unwrapped_keys_give_the_known_answers(world, module_path, where):
    out = known_answers(world, module_path, where)
    for name in ["kw", "kwp", "cbc_pad", "cbc", "ecb", "kwp_generic", "ec_pkcs8", "rsa_pkcs8",
                 "rsa_oaep", "rsa_pkcs"]:
        assert out[name] is True, (name, out)
    for name in ["kw", "kwp", "cbc_pad", "ecb"]:
        assert out["unwrap_" + name] is True, (name, out)
    assert out["unwrapped_flags"] == {
        "CKA_LOCAL": False, "CKA_EXTRACTABLE": False, "CKA_NEVER_EXTRACTABLE": False,
        "CKA_ALWAYS_SENSITIVE": False, "CKA_SENSITIVE": True, "CKA_TOKEN": where == "token"}, out
    assert out["check_value"] is True, out
    assert out["unwrapped_value_len"] == 32, out
    assert out["unwrap_ec_signs"] is True, out
    assert out["unwrap_ec_curve"] == "06052b81040022", out        # P-384, the key's own
    assert out["unwrap_rsa_decrypts"] is True, out
    assert out["unwrap_by_rsa"] is True, out
    assert out["round_trip"] is True, out
    assert out["generated_flags"] == {"CKA_LOCAL": True, "CKA_EXTRACTABLE": True,
                                      "CKA_NEVER_EXTRACTABLE": False}, out
    assert out["sealed_flags"] == {"CKA_EXTRACTABLE": False, "CKA_NEVER_EXTRACTABLE": False,
                                   "CKA_LOCAL": False}, out
    refusals = {
        "unextractable": 0x6A,          # CKR_KEY_UNEXTRACTABLE
        "generated_sealed": 0x6A,
        "sealed_set": 0x10,             # CKR_ATTRIBUTE_READ_ONLY
        "rsa_wraps_private": 0x69,      # CKR_KEY_NOT_WRAPPABLE
        "wrap_public_key": 0x69,
        "wrong_mechanism": 0x70,        # CKR_MECHANISM_INVALID
        "wrong_wrapping_type": 0x115,   # CKR_WRAPPING_KEY_TYPE_INCONSISTENT
        "bad_wrapping_handle": 0x113,   # CKR_WRAPPING_KEY_HANDLE_INVALID
        "ecb_private": 0x62,            # CKR_KEY_SIZE_RANGE
        "tampered": 0x110,              # CKR_WRAPPED_KEY_INVALID
        "not_that_type": 0x110,
        "bad_length": 0x112,            # CKR_WRAPPED_KEY_LEN_RANGE
        "incomplete": 0xD0,             # CKR_TEMPLATE_INCOMPLETE
        "bad_unwrapping_handle": 0xF0,  # CKR_UNWRAPPING_KEY_HANDLE_INVALID
        "accelerator_extractable": 0x13,  # CKR_ATTRIBUTE_VALUE_INVALID
    }
    assert {name: out[name] for name in refusals} == refusals, out
    assert out["mechanism_flags"] is True, out
    assert out["accelerator_session_extractable"] == {"CKA_EXTRACTABLE": True}, out


def test_pkcs11_tool_wraps_and_unwraps(world, module_path):
    """OpenSC's pkcs11-tool, as its own wrap tests drive it."""
    from cryptography.hazmat.primitives import keywrap
    env = client_env(world)
    tool = ["pkcs11-tool", "--module", module_path, "--token-label", "card1", "--login",
            "--pin", PIN]
    run(tool + ["--keygen", "--key-type", "AES:32", "--id", "a1", "--label", "tool-kek",
                "--usage-wrap"], env)
    run(tool + ["--keygen", "--key-type", "AES:16", "--id", "a2", "--label", "tool-target",
                "--extractable"], env)
    run(tool + ["--keygen", "--key-type", "AES:16", "--id", "a3", "--label", "tool-sealed"], env)
    wrapped = os.path.join(world.root, "wrapped.bin")
    run(tool + ["--wrap", "--mechanism", "AES-KEY-WRAP", "--id", "a1", "--application-id", "a2",
                "--output-file", wrapped], env)
    with open(wrapped, "rb") as f:
        blob = f.read()
    assert len(blob) == 24, blob.hex()                    # a 16-byte key, RFC 3394
    refused = run(tool + ["--wrap", "--mechanism", "AES-KEY-WRAP", "--id", "a1",
                          "--application-id", "a3", "--output-file", wrapped + ".no"], env,
                  check=False)
    assert refused.returncode != 0 and "CKR_KEY_UNEXTRACTABLE" in refused.stderr, refused.stderr

    # The tool unwraps it again: the two keys encrypt alike.
    run(tool + ["--unwrap", "--mechanism", "AES-KEY-WRAP", "--id", "a1", "--input-file", wrapped,
                "--key-type", "AES:", "--application-id", "a4", "--application-label",
                "tool-unwrapped"], env)
    block = os.path.join(world.root, "block.bin")
    with open(block, "wb") as f:
        f.write(bytes(range(32)))

    def encrypt(key_id):
        out = os.path.join(world.root, f"enc-{key_id}.bin")
        run(tool + ["--encrypt", "--mechanism", "AES-ECB", "--id", key_id, "--input-file", block,
                    "--output-file", out], env)
        with open(out, "rb") as f:
            return f.read()

    assert len(encrypt("a2")) == 32 and encrypt("a2") == encrypt("a4")
    listed = run(tool + ["--list-objects", "--type", "secrkey"], env).stdout
    assert "tool-unwrapped" in listed, listed

    # A key wrapped by `cryptography` under a key the tool imported.
    kek = os.path.join(world.root, "kek.bin")
    with open(kek, "wb") as f:
        f.write(bytes(range(100, 132)))
    run(tool + ["--write-object", kek, "--type", "secrkey", "--key-type", "AES:32", "--id", "b1",
                "--label", "known-kek", "--usage-wrap"], env)
    value = bytes(range(16, 48))
    theirs = os.path.join(world.root, "theirs.bin")
    with open(theirs, "wb") as f:
        f.write(keywrap.aes_key_wrap_with_padding(bytes(range(100, 132)), value))
    # CKM_AES_KEY_WRAP_PAD by number: this pkcs11-tool has no name for it.
    run(tool + ["--unwrap", "--mechanism", "0x210A", "--id", "b1", "--input-file",
                theirs, "--key-type", "AES:", "--application-id", "b2"], env)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    e = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
    assert encrypt("b2") == e.update(bytes(range(32))) + e.finalize()


FLEET = PRELUDE + r"""
slot, session = card_session(pin=sys.argv[2])
kek_value = bytes(range(32))
kek = secret(session, CKK_AES, kek_value, True, "fleet-kek", extractable=False)
value = bytes(range(64, 96))
k = session.unwrapKey(kek, keywrap.aes_key_wrap(kek_value, value),
                      unwrap_template(CKO_SECRET_KEY, CKK_AES, True, "fleet-unwrapped",
                                      [(CKA_EXTRACTABLE, True)]), Raw(CKM_AES_KEY_WRAP))
ec_known, ek = unwrap_ec(session, kek, kek_value, ec.SECP256R1(), True, "fleet-ec")
block = bytes(16)
want = aes(value, modes.ECB(), block)
def good_signature(digest):
    sig = bytes(session.sign(ek, digest, Raw(CKM_ECDSA)))
    return ecdsa_ok(ec_known.public_key(), digest, sig, hashes.SHA256())
def burst(n):
    wrong = sum(bytes(session.encrypt(k, block, Raw(CKM_AES_ECB))) != want for _ in range(n))
    return wrong + sum(not good_signature(bytes([i]) * 32) for i in range(n))
print(json.dumps({"wrong": burst(30)}), flush=True)
sys.stdin.readline()
print(json.dumps({"wrong": burst(60)}), flush=True)
sys.stdin.readline()
"""

ANOTHER_PROCESS = PRELUDE + r"""
slot, session = card_session(pin=sys.argv[2])
found = session.findObjects([(CKA_LABEL, "fleet-unwrapped")])
kek = session.findObjects([(CKA_LABEL, "fleet-kek")])[0]
ec_key = session.findObjects([(CKA_LABEL, "fleet-ec"), (CKA_CLASS, CKO_PRIVATE_KEY)])[0]
wrapped = bytes(session.wrapKey(kek, found[0], Raw(CKM_AES_KEY_WRAP)))
print(json.dumps({
    "found": len(found),
    "flags": flags(session, found[0], ["CKA_EXTRACTABLE", "CKA_LOCAL"]),
    "wrapped": keywrap.aes_key_unwrap(bytes(range(32)), wrapped).hex(),
    "ec_sealed": rv_of(lambda: session.wrapKey(kek, ec_key, Raw(CKM_AES_KEY_WRAP_PAD))),
}))
"""


def test_unwrapped_token_keys_serve_on_every_module_and_come_back(make_service, module_path,
                                                                   make_holder):
    from conftest import setup_world
    sim = setup_world(make_service(modules=3, init_delay_ms=50))
    serves_through_a_clear(sim, make_holder(sim), module_path, FLEET)
    # The world keeps what the key may do: another process wraps the
    # extractable key, and is refused the other.
    out = json.loads(run([sys.executable, "-c", ANOTHER_PROCESS, module_path, PIN],
                         client_env(sim)).stdout)
    assert out == {"found": 1, "flags": {"CKA_EXTRACTABLE": True, "CKA_LOCAL": False},
                   "wrapped": bytes(range(64, 96)).hex(), "ec_sealed": 0x6A}, out
    listed = json.loads(sim.ok("key", "list", "--json").stdout)
    flags = {k["label"]: [k["extractable"], k["imported"]] for k in listed}
    assert flags["fleet-unwrapped"] == [True, True] and flags["fleet-ec"] == [False, True], flags
    assert flags["eck"] == [False, False], flags                       # made by hsmsim
