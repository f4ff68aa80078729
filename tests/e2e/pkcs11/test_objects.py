"""Objects through the module, as an application (PyKCS11) sees them: the two
halves of a key pair are separate objects, each destroyed on its own; a NULL
PIN is refused as other modules refuse it.

Each scenario is a Python child process (PyKCS11 through the module) against
the `world` fixture's service; it prints one JSON object of what it saw. The
NULL PIN goes through p11_driver (PyKCS11 always passes a string).
"""

import json
import sys

import pytest

from conftest import PIN, PYKCS11_PRELUDE, client_env, run, skip_under_asan

pytestmark = skip_under_asan

PRELUDE = PYKCS11_PRELUDE

SCENARIO = PRELUDE + r"""
token, pin, persistent, first = sys.argv[2], sys.argv[3], sys.argv[4] == "token", sys.argv[5]
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == token][0]
session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
session.login(pin)
out = {}
ident = bytes([0x7e, 0x57, 1 if persistent else 0])
common = [(CKA_TOKEN, persistent), (CKA_ID, ident), (CKA_LABEL, "halves")]
pub, priv = session.generateKeyPair(
    common + [(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_VERIFY, True),
              (CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107"))],
    common + [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_SIGN, True),
              (CKA_PRIVATE, True), (CKA_SENSITIVE, True)],
    mecha=Mechanism(CKM_EC_KEY_PAIR_GEN))

def count(cls):
    return len(session.findObjects([(CKA_CLASS, cls), (CKA_ID, ident)]))

digest = bytes(range(32))
if first == "public":
    out["destroy_public"] = rv_of(lambda: session.destroyObject(pub))
    out["after_public"] = [count(CKO_PRIVATE_KEY), count(CKO_PUBLIC_KEY)]
    out["signature"] = len(session.sign(priv, digest, Mechanism(CKM_ECDSA)))
    out["destroy_private"] = rv_of(lambda: session.destroyObject(priv))
else:
    point = session.getAttributeValue(pub, [CKA_EC_POINT])[0]
    out["destroy_private"] = rv_of(lambda: session.destroyObject(priv))
    out["after_private"] = [count(CKO_PRIVATE_KEY), count(CKO_PUBLIC_KEY)]
    out["point_kept"] = session.getAttributeValue(pub, [CKA_EC_POINT])[0] == point
    out["verify_alone"] = rv_of(lambda: session.verify(pub, digest, bytes(64),
                                                        Mechanism(CKM_ECDSA)))
    out["destroy_public"] = rv_of(lambda: session.destroyObject(pub))
out["left"] = [count(CKO_PRIVATE_KEY), count(CKO_PUBLIC_KEY)]
out["again"] = rv_of(lambda: session.destroyObject(priv))
print(json.dumps(out))
"""


def scenario(world, module_path, persistent, first):
    r = run([sys.executable, "-c", SCENARIO, module_path, "card1", PIN,
             "token" if persistent else "session", first], client_env(world))
    return json.loads(r.stdout)


@pytest.mark.parametrize("persistent", [False, True], ids=["session-key", "token-key"])
def test_the_public_half_is_destroyed_alone(world, module_path, persistent):
    out = scenario(world, module_path, persistent, "public")
    assert out["destroy_public"] == 0, out
    assert out["after_public"] == [1, 0], out   # the private key is still found...
    assert out["signature"] == 64, out          # ...and signs
    assert out["destroy_private"] == 0, out
    assert out["left"] == [0, 0], out
    assert out["again"] == 0x82, out            # CKR_OBJECT_HANDLE_INVALID


@pytest.mark.parametrize("persistent", [False, True], ids=["session-key", "token-key"])
def test_the_private_half_is_destroyed_alone(world, module_path, persistent):
    out = scenario(world, module_path, persistent, "private")
    assert out["destroy_private"] == 0, out
    assert out["after_private"] == [0, 1], out  # the public key object stays
    assert out["point_kept"], out
    assert out["verify_alone"] == 0x68, out     # CKR_KEY_FUNCTION_NOT_PERMITTED
    assert out["destroy_public"] == 0, out
    assert out["left"] == [0, 0], out


def test_a_null_pin_is_arguments_bad_and_there_is_no_security_officer(world, module_path,
                                                                         driver_bin):
    r = run([driver_bin, "null-pin", module_path, "card1"], client_env(world))
    # CKR_ARGUMENTS_BAD twice, CKR_USER_TYPE_INVALID, CKR_USER_NOT_LOGGED_IN.
    assert r.stdout.split() == ["rv=0x7", "rv=0x7", "so=0x103", "initpin=0x101"], r.stdout


DIGESTS = PRELUDE + r"""
import hashlib
slot = lib.getSlotList(tokenPresent=True)[0]
session = lib.openSession(slot)
names = {0x210: "md5", 0x220: "sha1", 0x255: "sha224", 0x250: "sha256", 0x260: "sha384",
         0x270: "sha512", 0x48: "sha512_224", 0x4c: "sha512_256", 0x2b5: "sha3_224",
         0x2b0: "sha3_256", 0x2c0: "sha3_384", 0x2d0: "sha3_512"}
data = bytes(range(256)) * 41
out = {"listed": [], "single": {}, "parts": {}}
listed = set(lib.getMechanismList(slot))
for m, name in names.items():
    key = PyKCS11.CKM.get(m, m)
    if m in listed or key in listed:
        out["listed"].append(name)
        info = lib.getMechanismInfo(slot, key)
        assert info.flags & CKF_DIGEST, info.flags
    ref = hashlib.new(name.replace("_", "-") if name.startswith("sha512_") else name, data)
    out["single"][name] = bytes(session.digest(data, Mechanism(m))) == ref.digest()
    d = session.digestSession(Mechanism(m))
    for i in range(0, len(data), 1000):
        d.update(data[i:i + 1000])
    out["parts"][name] = bytes(d.final()) == ref.digest()

out["unknown"] = rv_of(lambda: session.digest(data, Mechanism(CKM_SHA256_RSA_PKCS)))
d = session.digestSession(Mechanism(CKM_SHA256))
out["twice"] = rv_of(lambda: session.digestSession(Mechanism(CKM_SHA256)))
key = session.findObjects([(CKA_CLASS, CKO_PRIVATE_KEY)])
out["key"] = rv_of(lambda: d.digestKey(key[0])) if key else None
print(json.dumps(out))
"""


def test_digests_in_the_module(world, module_path):
    r = run([sys.executable, "-c", DIGESTS, module_path], client_env(world))
    out = json.loads(r.stdout)
    every = ["md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256",
             "sha3_224", "sha3_256", "sha3_384", "sha3_512"]
    assert out["listed"] == every, out
    assert all(out["single"].values()) and all(out["parts"].values()), out
    assert out["unknown"] == 0x70, out   # CKR_MECHANISM_INVALID
    assert out["twice"] == 0x90, out     # CKR_OPERATION_ACTIVE
    assert out["key"] == 0x67, out       # CKR_KEY_INDIGESTIBLE


RSA_EXPONENTS = PRELUDE + r"""
session = lib.openSession(lib.getSlotList(tokenPresent=True)[0],
                          CKF_SERIAL_SESSION | CKF_RW_SESSION)
out = {}
for name, e in [("3", b"\x03"), ("65537", b"\x01\x00\x01"), ("2^16+3", b"\x00\x01\x00\x03"),
                ("even", b"\x01\x00\x00"), ("1", b"\x01")]:
    try:
        pub, priv = session.generateKeyPair(
            [(CKA_TOKEN, False), (CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, e),
             (CKA_VERIFY, True)], [(CKA_TOKEN, False), (CKA_SIGN, True)],
            mecha=Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN))
    except PyKCS11Error as err:
        out[name] = err.value
        continue
    got = bytes(session.getAttributeValue(pub, [CKA_PUBLIC_EXPONENT])[0])
    signature = bytes(session.sign(priv, b"data", Mechanism(CKM_SHA256_RSA_PKCS)))
    ok = session.verify(pub, b"data", signature, Mechanism(CKM_SHA256_RSA_PKCS))
    out[name] = [got.hex(), bool(ok)]
print(json.dumps(out))
"""


def test_rsa_keys_with_any_valid_public_exponent(world, module_path):
    r = run([sys.executable, "-c", RSA_EXPONENTS, module_path], client_env(world))
    out = json.loads(r.stdout)
    assert out["3"] == ["03", True], out
    assert out["65537"] == ["010001", True], out
    assert out["2^16+3"] == ["010003", True], out
    assert out["even"] == 0x13 and out["1"] == 0x13, out  # CKR_ATTRIBUTE_VALUE_INVALID


EVERY_SIGNATURE = PRELUDE + r"""
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

session = lib.openSession(lib.getSlotList(tokenPresent=True)[0],
                          CKF_SERIAL_SESSION | CKF_RW_SESSION)
ec_pub, ec_priv = session.generateKeyPair(
    [(CKA_TOKEN, False), (CKA_VERIFY, True),
     (CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107"))],
    [(CKA_TOKEN, False), (CKA_SIGN, True)], mecha=Mechanism(CKM_EC_KEY_PAIR_GEN))
rsa_pub, rsa_priv = session.generateKeyPair(
    [(CKA_TOKEN, False), (CKA_MODULUS_BITS, 2048), (CKA_VERIFY, True)],
    [(CKA_TOKEN, False), (CKA_SIGN, True)], mecha=Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN))
point = bytes(session.getAttributeValue(ec_pub, [CKA_EC_POINT])[0])[2:]
ec_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
n, e = session.getAttributeValue(rsa_pub, [CKA_MODULUS, CKA_PUBLIC_EXPONENT])
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
rsa_key = RSAPublicNumbers(int.from_bytes(bytes(e), "big"),
                           int.from_bytes(bytes(n), "big")).public_key()
HASHES = {"SHA1": hashes.SHA1(), "SHA224": hashes.SHA224(), "SHA256": hashes.SHA256(),
          "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}
PSS_PARAMS = {"SHA1": (CKM_SHA_1, CKG_MGF1_SHA1, 20), "SHA224": (CKM_SHA224, CKG_MGF1_SHA224, 28),
              "SHA256": (CKM_SHA256, CKG_MGF1_SHA256, 32),
              "SHA384": (CKM_SHA384, CKG_MGF1_SHA384, 48),
              "SHA512": (CKM_SHA512, CKG_MGF1_SHA512, 64)}
data = b"every signing mechanism"
out = {}
for name in ["SHA1", "SHA224", "SHA256", "SHA384", "SHA512"]:
    h = HASHES[name]
    sig = bytes(session.sign(ec_priv, data, Mechanism(getattr(PyKCS11, f"CKM_ECDSA_{name}"))))
    half = len(sig) // 2
    der = utils.encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                     int.from_bytes(sig[half:], "big"))
    ec_key.verify(der, data, ec.ECDSA(h))
    out[f"ECDSA_{name}"] = True
    sig = bytes(session.sign(rsa_priv, data, Mechanism(getattr(PyKCS11, f"CKM_{name}_RSA_PKCS"))))
    rsa_key.verify(sig, data, padding.PKCS1v15(), h)
    out[f"{name}_RSA_PKCS"] = True
    alg, mgf, salt = PSS_PARAMS[name]
    pss = RSA_PSS_Mechanism(getattr(PyKCS11, f"CKM_{name}_RSA_PKCS_PSS"), alg, mgf, salt)
    sig = bytes(session.sign(rsa_priv, data, pss))
    rsa_key.verify(sig, data, padding.PSS(padding.MGF1(h), salt), h)
    out[f"{name}_RSA_PKCS_PSS"] = bool(session.verify(rsa_pub, data, sig, pss))
print(json.dumps(out))
"""


def test_every_hashing_signature_mechanism_checked_by_openssl(world, module_path):
    r = run([sys.executable, "-c", EVERY_SIGNATURE, module_path], client_env(world))
    out = json.loads(r.stdout)
    assert len(out) == 15 and all(out.values()), out
