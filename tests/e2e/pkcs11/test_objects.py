"""Objects through the module, as an application (PyKCS11) sees them: the two
halves of a key pair are separate objects, each destroyed on its own; a NULL
PIN is refused as other modules refuse it.

Each scenario is a Python child process (PyKCS11 through the module) against
the `world` fixture's service; it prints one JSON object of what it saw. The
NULL PIN goes through p11_driver (PyKCS11 always passes a string).
"""

import json
import os
import sys

import pytest

from conftest import PIN, PYKCS11_PRELUDE, client_env, ops, run, skip_under_asan

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


def test_pkcs11_3_0_interfaces(world, module_path, driver_bin):
    r = run([driver_bin, "interfaces", module_path, "card1", PIN], client_env(world))
    # The 3.0 interface is the default; each reports its own version; a
    # cancelled C_SignInit leaves nothing to sign (CKR_OPERATION_NOT_INITIALIZED);
    # the message-based functions are not offered (CKR_FUNCTION_NOT_SUPPORTED).
    assert r.stdout.strip() == ("interfaces=PKCS 11/3.0,PKCS 11/2.40 default=3.0 "
                                "info=3.0,2.40 missing=0x7 loginuser=0x0 cancel=0x0 "
                                "after=0x91 message=0x54"), r.stdout


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


MAKE_CERT = r"""
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "objects test")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(0x1234567)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.DER))
"""

PLAIN_OBJECTS = PYKCS11_PRELUDE + r"""
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

token, pin, step, cert_path = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == token][0]
session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
out = {}

def find(*attrs):
    return session.findObjects(list(attrs))

if step == "make":
    session.login(pin)
    der = open(cert_path, "rb").read()
    cert = x509.load_der_x509_certificate(der)
    c = session.createObject([(CKA_CLASS, CKO_CERTIFICATE), (CKA_CERTIFICATE_TYPE, CKC_X_509),
                              (CKA_TOKEN, True), (CKA_VALUE, der), (CKA_ID, b"\x42"),
                              (CKA_LABEL, "the cert")])
    subject, serial = session.getAttributeValue(c, [CKA_SUBJECT, CKA_SERIAL_NUMBER])
    out["derived"] = [bytes(subject) == cert.subject.public_bytes(),
                      bytes(serial) == bytes.fromhex("02040123 4567".replace(" ", ""))]
    d = session.createObject([(CKA_CLASS, CKO_DATA), (CKA_TOKEN, False), (CKA_LABEL, "scratch"),
                              (CKA_VALUE, b"one")])
    session.setAttributeValue(d, [(CKA_VALUE, b"two")])
    out["data_value"] = bytes(session.getAttributeValue(d, [CKA_VALUE])[0]).decode()
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    nums = n.public_numbers()
    p = session.createObject([(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_RSA),
                              (CKA_TOKEN, False), (CKA_MODULUS, nums.n.to_bytes(256, "big")),
                              (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"), (CKA_ID, b"\x43")])
    spki = bytes(session.getAttributeValue(p, [CKA_PUBLIC_KEY_INFO])[0])
    out["spki"] = spki == n.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    out["private_token_data"] = rv_of(lambda: session.createObject(
        [(CKA_CLASS, CKO_DATA), (CKA_TOKEN, True), (CKA_PRIVATE, True), (CKA_VALUE, b"x")]))
    out["bad_cert"] = rv_of(lambda: session.createObject(
        [(CKA_CLASS, CKO_CERTIFICATE), (CKA_CERTIFICATE_TYPE, CKC_X_509), (CKA_VALUE, b"junk")]))
    out["no_type"] = rv_of(lambda: session.createObject(
        [(CKA_CLASS, CKO_CERTIFICATE), (CKA_VALUE, der)]))
    out["read_only"] = rv_of(lambda: session.setAttributeValue(c, [(CKA_VALUE, b"x")]))
    # Label and id of a token certificate change in the world, same handle.
    session.setAttributeValue(c, [(CKA_LABEL, "renamed"), (CKA_ID, b"\x44")])
    out["renamed_here"] = [o.value() == c.value() for o in find((CKA_LABEL, "renamed"))]
    # A token key's label and id change in the world; its handle stays.
    key = find((CKA_CLASS, CKO_PRIVATE_KEY), (CKA_ID, b"\x01"))[0]
    out["key_label"] = rv_of(lambda: session.setAttributeValue(
        key, [(CKA_LABEL, "relabelled"), (CKA_ID, b"\x01\x02")]))
    out["key_read_only"] = rv_of(lambda: session.setAttributeValue(key, [(CKA_SIGN, False)]))
    found = find((CKA_CLASS, CKO_PRIVATE_KEY), (CKA_LABEL, "relabelled"))
    out["key_kept"] = [o.value() == key.value() for o in found]
    out["key_signs"] = len(session.sign(key, bytes(32), PyKCS11.Mechanism(CKM_ECDSA)))
elif step == "look":
    # Another process, before login: the public token objects are there.
    certs = find((CKA_CLASS, CKO_CERTIFICATE))
    out["certs"] = [session.getAttributeValue(o, [CKA_LABEL])[0] for o in certs]
    out["ids"] = [bytes(session.getAttributeValue(o, [CKA_ID])[0]).hex() for o in certs]
    out["data"] = len(find((CKA_CLASS, CKO_DATA)))   # the session object went with its process
    out["public_keys"] = len(find((CKA_CLASS, CKO_PUBLIC_KEY), (CKA_ID, b"\x43")))
    out["destroy_before_login"] = rv_of(lambda: session.destroyObject(certs[0]))
    out["public_half"] = len(find((CKA_CLASS, CKO_PUBLIC_KEY), (CKA_LABEL, "relabelled"),
                                  (CKA_ID, b"\x01\x02")))
    session.login(pin)
    out["private_key"] = len(find((CKA_CLASS, CKO_PRIVATE_KEY), (CKA_LABEL, "relabelled")))
    out["destroyed"] = rv_of(lambda: session.destroyObject(certs[0]))
    out["left"] = len(find((CKA_CLASS, CKO_CERTIFICATE)))
print(json.dumps(out))
"""


def test_certificates_data_objects_and_public_keys(world, module_path):
    cert = os.path.join(world.root, "cert.der")
    run([sys.executable, "-c", MAKE_CERT, cert], client_env(world))
    made = json.loads(run([sys.executable, "-c", PLAIN_OBJECTS, module_path, "card1", PIN,
                           "make", cert], client_env(world)).stdout)
    assert made["derived"] == [True, True], made
    assert made["data_value"] == "two", made
    assert made["spki"], made
    assert made["private_token_data"] == 0x13, made  # CKR_ATTRIBUTE_VALUE_INVALID
    assert made["bad_cert"] == 0x13, made
    assert made["no_type"] == 0xD0, made             # CKR_TEMPLATE_INCOMPLETE
    assert made["read_only"] == 0x10, made           # CKR_ATTRIBUTE_READ_ONLY
    assert made["renamed_here"] == [True], made
    assert made["key_label"] == 0 and made["key_kept"] == [True], made
    assert made["key_read_only"] == 0x10, made       # CKR_ATTRIBUTE_READ_ONLY
    assert made["key_signs"] == 64, made
    seen = json.loads(run([sys.executable, "-c", PLAIN_OBJECTS, module_path, "card1", PIN,
                           "look", cert], client_env(world)).stdout)
    assert seen["certs"] == ["renamed"] and seen["ids"] == ["44"], seen
    assert seen["data"] == 0 and seen["public_keys"] == 0, seen
    assert seen["destroy_before_login"] == 0x101, seen  # CKR_USER_NOT_LOGGED_IN
    assert seen["public_half"] == 1 and seen["private_key"] == 1, seen
    assert "relabelled" in world.ok("key", "list").stdout
    assert seen["destroyed"] == 0 and seen["left"] == 0, seen
    assert "object" not in world.ok("key", "list").stdout


def test_pkcs11_tool_and_p11tool_write_objects(world, module_path):
    env = client_env(world)
    cert = os.path.join(world.root, "cert.der")
    run([sys.executable, "-c", MAKE_CERT, cert], env)
    tool = ["pkcs11-tool", "--module", module_path, "--token-label", "card1", "--login",
            "--pin", PIN]
    run(tool + ["--write-object", cert, "--type", "cert", "--id", "77", "--label", "tool-cert"],
        env)
    data = os.path.join(world.root, "data.bin")
    with open(data, "wb") as f:
        f.write(b"kept on the token")
    run(tool + ["--write-object", data, "--type", "data", "--label", "tool-data"], env)
    listed = run(["pkcs11-tool", "--module", module_path, "--token-label", "card1",
                  "--list-objects"], env).stdout
    assert "label:      tool-cert" in listed and "tool-data" in listed, listed
    read = run(tool + ["--read-object", "--type", "data", "--label", "tool-data"], env)
    assert read.stdout == "kept on the token", read.stdout

    pem = os.path.join(world.root, "cert.pem")
    run(["openssl", "x509", "-inform", "der", "-in", cert, "-out", pem], env)
    gnutls = dict(env, GNUTLS_PIN=PIN)
    run(["p11tool", "--provider", module_path, "--login", "--write", "--load-certificate", pem,
         "--label", "gnutls-cert", "pkcs11:token=card1"], gnutls)
    certs = run(["p11tool", "--provider", module_path, "--list-all-certs",
                 "pkcs11:token=card1"], env).stdout
    assert "Label: gnutls-cert" in certs and "Label: tool-cert" in certs, certs
    run(["p11tool", "--provider", module_path, "--login", "--batch", "--delete",
         "pkcs11:token=card1;object=gnutls-cert"], gnutls)
    certs = run(["p11tool", "--provider", module_path, "--list-all-certs",
                 "pkcs11:token=card1"], env).stdout
    assert "gnutls-cert" not in certs and "tool-cert" in certs, certs


SET_PIN = PYKCS11_PRELUDE + r"""
token, old, new, step = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == token][0]
out = {}
if step == "change":
    ro = lib.openSession(slot, CKF_SERIAL_SESSION)
    out["read_only"] = rv_of(lambda: ro.setPin(old, new))
    session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    out["wrong_old"] = rv_of(lambda: session.setPin("not " + old, new))
    out["empty_new"] = rv_of(lambda: session.setPin(old, ""))
    out["changed"] = rv_of(lambda: session.setPin(old, new))
else:
    session = lib.openSession(slot, CKF_SERIAL_SESSION)
    out["old"] = rv_of(lambda: session.login(old))
    out["new"] = rv_of(lambda: session.login(new))
print(json.dumps(out))
"""


def test_c_setpin_changes_the_softcard_passphrase_for_everyone(world, module_path):
    env = client_env(world)
    changed = json.loads(run([sys.executable, "-c", SET_PIN, module_path, "card1", PIN,
                              "new passphrase", "change"], env).stdout)
    # PyKCS11 passes an empty PIN as NULL: CKR_ARGUMENTS_BAD (no PIN pad).
    assert changed == {"read_only": 0xB5, "wrong_old": 0xA0, "empty_new": 0x7,
                       "changed": 0}, changed
    # Another process (every module): the old passphrase is refused.
    after = json.loads(run([sys.executable, "-c", SET_PIN, module_path, "card1", PIN,
                            "new passphrase", "login"], env).stdout)
    assert after == {"old": 0xA0, "new": 0}, after
    # So is it for hsmsim's own tools.
    with open(world.pinfile, "w") as f:
        f.write(PIN)
    r = world.run("key", "generate", "--type", "ec-p256", "--label", "x",
                  "--protect", "softcard:card1", "--passphrase-file", world.pinfile)
    assert r.returncode != 0 and "wrong passphrase" in r.stderr, r.stderr


IMPORT_PRIVATE = PYKCS11_PRELUDE + r"""
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

token, pin = sys.argv[2], sys.argv[3]
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == token][0]
session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
session.login(pin)
out = {}

def big(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")

r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
p = r.private_numbers()
rsa_template = [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_RSA), (CKA_TOKEN, True),
                (CKA_ID, b"\x61"), (CKA_LABEL, "imported rsa"), (CKA_SIGN, True),
                (CKA_MODULUS, big(p.public_numbers.n)), (CKA_PUBLIC_EXPONENT, big(65537)),
                (CKA_PRIVATE_EXPONENT, big(p.d)), (CKA_PRIME_1, big(p.p)), (CKA_PRIME_2, big(p.q)),
                (CKA_EXPONENT_1, big(p.dmp1)), (CKA_EXPONENT_2, big(p.dmq1)),
                (CKA_COEFFICIENT, big(p.iqmp))]
k = session.createObject(rsa_template)
sig = bytes(session.sign(k, b"imported", PyKCS11.Mechanism(CKM_SHA256_RSA_PKCS)))
try:
    r.public_key().verify(sig, b"imported", padding.PKCS1v15(), hashes.SHA256())
    out["rsa"] = True
except Exception:
    out["rsa"] = False
out["rsa_public_half"] = len(session.findObjects([(CKA_CLASS, CKO_PUBLIC_KEY),
                                                  (CKA_ID, b"\x61")]))
bad = [(t, v) if t != CKA_PRIVATE_EXPONENT else (t, big(p.d + 2)) for t, v in rsa_template]
out["rsa_inconsistent"] = rv_of(lambda: session.createObject(bad))

e = ec.generate_private_key(ec.SECP384R1())
k = session.createObject([(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_TOKEN, False),
                          (CKA_EC_PARAMS, bytes.fromhex("06052b81040022")), (CKA_SIGN, True),
                          (CKA_VALUE, e.private_numbers().private_value.to_bytes(48, "big"))])
digest = bytes(range(48))
sig = bytes(session.sign(k, digest, PyKCS11.Mechanism(CKM_ECDSA)))
der = utils.encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
try:
    e.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    out["ec"] = True
except Exception:
    out["ec"] = False
out["ec_bad_curve"] = rv_of(lambda: session.createObject(
    [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_EC_PARAMS, b"\x06\x01\x00"),
     (CKA_VALUE, b"\x01")]))
print(json.dumps(out))
"""


def test_private_keys_are_imported(world, module_path):
    out = json.loads(run([sys.executable, "-c", IMPORT_PRIVATE, module_path, "card1", PIN],
                         client_env(world)).stdout)
    assert out["rsa"] and out["ec"], out            # signatures the keys' owners verify
    assert out["rsa_public_half"] == 1, out
    assert out["rsa_inconsistent"] == 0x13, out     # CKR_ATTRIBUTE_VALUE_INVALID
    assert out["ec_bad_curve"] == 0x140, out        # CKR_CURVE_NOT_SUPPORTED
    assert "imported rsa" in world.ok("key", "list").stdout


PUBLIC_KEY_OBJECTS = PYKCS11_PRELUDE + r"""
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

slot, session = card_session(pin=sys.argv[2])
token = sys.argv[3] == "token"
out = {}
data = b"signed elsewhere, verified on the HSMs"
r = rsa.generate_private_key(public_exponent=65537, key_size=3072)
n = r.public_key().public_numbers()
rpub = session.createObject([(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_RSA),
                             (CKA_TOKEN, token), (CKA_MODULUS, n.n.to_bytes(384, "big")),
                             (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"), (CKA_VERIFY, True),
                             (CKA_ENCRYPT, True), (CKA_LABEL, "rsa-alone")])
e = ec.generate_private_key(ec.SECP384R1())
point = e.public_key().public_bytes(serialization.Encoding.X962,
                                    serialization.PublicFormat.UncompressedPoint)
epub = session.createObject([(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_EC),
                             (CKA_TOKEN, token), (CKA_EC_PARAMS, bytes.fromhex("06052b81040022")),
                             (CKA_EC_POINT, b"\x04" + bytes([len(point)]) + point),
                             (CKA_VERIFY, True), (CKA_LABEL, "ec-alone")])
pkcs1 = r.sign(data, padding.PKCS1v15(), hashes.SHA256())
out["rsa_pkcs1"] = bool(session.verify(rpub, data, pkcs1, Mechanism(CKM_SHA256_RSA_PKCS)))
out["rsa_pkcs1_bad"] = bool(session.verify(rpub, data + b"!", pkcs1, Mechanism(CKM_SHA256_RSA_PKCS)))
pss = r.sign(data, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384())
out["rsa_pss"] = bool(session.verify(rpub, data, pss, RSA_PSS_Mechanism(
    CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA384, 48)))
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
rr, ss = decode_dss_signature(e.sign(data, ec.ECDSA(hashes.SHA384())))
raw = rr.to_bytes(48, "big") + ss.to_bytes(48, "big")
out["ecdsa"] = bool(session.verify(epub, data, raw, Mechanism(CKM_ECDSA_SHA384)))
out["ecdsa_bad"] = bool(session.verify(epub, data, raw[::-1], Mechanism(CKM_ECDSA_SHA384)))
out["ecdsa_short"] = rv_of(lambda: session.verify(epub, data, raw[:90], Mechanism(CKM_ECDSA_SHA384)))
secret = bytes(session.encrypt(rpub, b"for the key's owner", RSAOAEPMechanism(CKM_SHA256,
                                                                               CKG_MGF1_SHA256)))
out["oaep"] = r.decrypt(secret, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                             None)) == b"for the key's owner"
out["ec_encrypt"] = rv_of(lambda: session.encrypt(epub, b"x", RSAOAEPMechanism(CKM_SHA256,
                                                                                CKG_MGF1_SHA256)))
out["sign_with_public"] = rv_of(lambda: session.sign(rpub, data, Mechanism(CKM_SHA256_RSA_PKCS)))
print(json.dumps(out))
"""


@pytest.mark.parametrize("where", ["session", "token"])
def test_public_key_objects_on_their_own_verify_and_encrypt(world, module_path, where):
    before = sum(ops(world).values())
    r = run([sys.executable, "-c", PUBLIC_KEY_OBJECTS, module_path, PIN, where],
            client_env(world))
    out = json.loads(r.stdout)
    assert out == {"rsa_pkcs1": True, "rsa_pkcs1_bad": False, "rsa_pss": True, "ecdsa": True,
                   "ecdsa_bad": False, "ecdsa_short": 0xC1,        # CKR_SIGNATURE_LEN_RANGE
                   "oaep": True,
                   "ec_encrypt": 0x63,                             # CKR_KEY_TYPE_INCONSISTENT
                   "sign_with_public": 0x68}, out                  # KEY_FUNCTION_NOT_PERMITTED
    # Done on the HSMs, as every operation with a key: the four that succeed
    # count as operations served (the bad signatures as operations failed).
    assert sum(ops(world).values()) >= before + 4
