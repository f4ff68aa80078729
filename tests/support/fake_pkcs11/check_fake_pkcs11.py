#!/usr/bin/python3
"""Self-test of the fake PKCS#11 library (fake_pkcs11.cpp).

Usage: check_fake_pkcs11.py LIBRARY

Drives the library through its control files (see the comment at the top
of fake_pkcs11.cpp) with ctypes (the raw PKCS#11 rules: size queries,
CK_UNAVAILABLE_INFORMATION, threads blocked in C_WaitForSlotEvent), PyKCS11
and pkcs11-tool. Prints one line per check; exits 0 when all pass.
"""

import ctypes
import os
import subprocess
import sys
import tempfile
import threading
import time

import PyKCS11
from PyKCS11 import LowLevel as LL

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        Prehashed, encode_dss_signature)
except ImportError:  # verify with openssl alone
    ec = None

PIN = "1234"
KEY_ID = bytes.fromhex("a1b2")
UNAVAILABLE = ctypes.c_ulong(-1).value

failures = []


def check(name, ok, detail=""):
    print(("ok   - " if ok else "FAIL - ") + name + ("" if ok or not detail else ": " + detail))
    if not ok:
        failures.append(name)


def rv_of(call):
    """The CKR_ a PyKCS11 call raised, or CKR_OK."""
    try:
        call()
        return PyKCS11.CKR_OK
    except PyKCS11.PyKCS11Error as e:
        return e.value


def values_of(handles):
    return [handle.value() for handle in handles]


def rv_name(rv):
    return PyKCS11.CKR.get(rv, hex(rv))


def expect_rv(name, got, want):
    check(name, got == want, "got %s, expected %s" % (rv_name(got), rv_name(want)))


# ---- Raw calls through ctypes --------------------------------------------

NAMES = """Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo
GetTokenInfo GetMechanismList GetMechanismInfo InitToken InitPIN SetPIN OpenSession
CloseSession CloseAllSessions GetSessionInfo GetOperationState SetOperationState Login
Logout CreateObject CopyObject DestroyObject GetObjectSize GetAttributeValue
SetAttributeValue FindObjectsInit FindObjects FindObjectsFinal EncryptInit Encrypt
EncryptUpdate EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal DigestInit
Digest DigestUpdate DigestKey DigestFinal SignInit Sign SignUpdate SignFinal
SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal
VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate
SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair WrapKey UnwrapKey
DeriveKey SeedRandom GenerateRandom GetFunctionStatus CancelFunction
WaitForSlotEvent""".split()

UL = ctypes.c_ulong
PUL = ctypes.POINTER(UL)


class Attribute(ctypes.Structure):
    _fields_ = [("type", UL), ("pValue", ctypes.c_void_p), ("ulValueLen", UL)]


class Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", UL), ("pParameter", ctypes.c_void_p), ("ulParameterLen", UL)]


class InitArgs(ctypes.Structure):
    _fields_ = [("CreateMutex", ctypes.c_void_p), ("DestroyMutex", ctypes.c_void_p),
                ("LockMutex", ctypes.c_void_p), ("UnlockMutex", ctypes.c_void_p),
                ("flags", UL), ("pReserved", ctypes.c_void_p)]


class FunctionList(ctypes.Structure):
    _fields_ = [("version", ctypes.c_ubyte * 2), ("f", ctypes.c_void_p * len(NAMES))]


SIGNATURES = {
    "Initialize": [ctypes.c_void_p],
    "Finalize": [ctypes.c_void_p],
    "GetSlotList": [ctypes.c_ubyte, PUL, PUL],
    "OpenSession": [UL, UL, ctypes.c_void_p, ctypes.c_void_p, PUL],
    "CloseSession": [UL],
    "Login": [UL, UL, ctypes.c_char_p, UL],
    "GetAttributeValue": [UL, UL, ctypes.POINTER(Attribute), UL],
    "SignInit": [UL, ctypes.POINTER(Mechanism), UL],
    "Sign": [UL, ctypes.c_char_p, UL, ctypes.c_void_p, PUL],
    "Encrypt": [UL, ctypes.c_char_p, UL, ctypes.c_void_p, PUL],
    "WaitForSlotEvent": [UL, PUL, ctypes.c_void_p],
}


class Raw:
    def __init__(self, path):
        lib = ctypes.CDLL(path)
        get = lib.C_GetFunctionList
        get.argtypes = [ctypes.POINTER(ctypes.POINTER(FunctionList))]
        get.restype = UL
        table = ctypes.POINTER(FunctionList)()
        assert get(ctypes.byref(table)) == 0
        self.table = table.contents

    def __getattr__(self, name):
        pointer = self.table.f[NAMES.index(name)]
        return ctypes.CFUNCTYPE(UL, *SIGNATURES[name])(pointer)


def raw_checks(library, directory):
    raw = Raw(library)
    count = UL(0)
    expect_rv("raw: C_GetSlotList before C_Initialize",
              raw.GetSlotList(1, None, ctypes.byref(count)), PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED)
    del os.environ["FAKE_PKCS11_DIR"]
    expect_rv("raw: C_Initialize without FAKE_PKCS11_DIR", raw.Initialize(None),
              PyKCS11.CKR_GENERAL_ERROR)
    os.environ["FAKE_PKCS11_DIR"] = directory
    args = InitArgs(flags=PyKCS11.CKF_OS_LOCKING_OK)
    expect_rv("raw: C_Initialize(CKF_OS_LOCKING_OK)", raw.Initialize(ctypes.byref(args)),
              PyKCS11.CKR_OK)
    expect_rv("raw: C_Initialize again", raw.Initialize(None),
              PyKCS11.CKR_CRYPTOKI_ALREADY_INITIALIZED)

    rv = raw.GetSlotList(1, None, ctypes.byref(count))
    check("raw: C_GetSlotList size query", rv == 0 and count.value == 1,
          "%s, count %d" % (rv_name(rv), count.value))
    slots = (UL * 1)()
    count.value = 0
    rv = raw.GetSlotList(1, slots, ctypes.byref(count))
    check("raw: C_GetSlotList into a small buffer", rv == PyKCS11.CKR_BUFFER_TOO_SMALL
          and count.value == 1, "%s, count %d" % (rv_name(rv), count.value))

    session = UL(0)
    rv = raw.OpenSession(0, PyKCS11.CKF_SERIAL_SESSION, None, None, ctypes.byref(session))
    check("raw: C_OpenSession gives handle 1", rv == 0 and session.value == 1,
          "%s, handle %d" % (rv_name(rv), session.value))
    s = session.value
    point = Attribute(PyKCS11.CKA_EC_POINT, None, 0)
    rv = raw.GetAttributeValue(s, 2, ctypes.byref(point), 1)
    check("raw: CKA_EC_POINT size query", rv == 0 and point.ulValueLen == 67,
          "%s, length %d" % (rv_name(rv), point.ulValueLen))
    small = ctypes.create_string_buffer(10)
    point = Attribute(PyKCS11.CKA_EC_POINT, ctypes.cast(small, ctypes.c_void_p), 10)
    rv = raw.GetAttributeValue(s, 2, ctypes.byref(point), 1)
    check("raw: CKA_EC_POINT into a small buffer", rv == PyKCS11.CKR_BUFFER_TOO_SMALL
          and point.ulValueLen == UNAVAILABLE, "%s, length %d" % (rv_name(rv), point.ulValueLen))
    pair = (Attribute * 2)(Attribute(PyKCS11.CKA_MODULUS, None, 0),
                           Attribute(PyKCS11.CKA_KEY_TYPE, None, 0))
    rv = raw.GetAttributeValue(s, 2, pair, 2)
    check("raw: unknown attribute is CKR_ATTRIBUTE_TYPE_INVALID, unavailable",
          rv == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID and pair[0].ulValueLen == UNAVAILABLE
          and pair[1].ulValueLen == ctypes.sizeof(UL),
          "%s, lengths %d %d" % (rv_name(rv), pair[0].ulValueLen, pair[1].ulValueLen))
    rv = raw.GetAttributeValue(s, 1, pair, 2)
    expect_rv("raw: private key invisible before login", rv, PyKCS11.CKR_OBJECT_HANDLE_INVALID)
    mech = Mechanism(PyKCS11.CKM_ECDSA, None, 0)
    expect_rv("raw: C_SignInit before login", raw.SignInit(s, ctypes.byref(mech), 1),
              PyKCS11.CKR_USER_NOT_LOGGED_IN)
    pin = PIN.encode()
    expect_rv("raw: C_Login", raw.Login(s, PyKCS11.CKU_USER, pin, len(pin)), PyKCS11.CKR_OK)
    expect_rv("raw: C_SignInit", raw.SignInit(s, ctypes.byref(mech), 1), PyKCS11.CKR_OK)
    length = UL(0)
    digest = bytes(range(32))
    rv = raw.Sign(s, digest, 32, None, ctypes.byref(length))
    check("raw: C_Sign size query gives 64", rv == 0 and length.value == 64,
          "%s, length %d" % (rv_name(rv), length.value))
    buffer = ctypes.create_string_buffer(64)
    length.value = 10
    rv = raw.Sign(s, digest, 32, buffer, ctypes.byref(length))
    check("raw: C_Sign into a small buffer", rv == PyKCS11.CKR_BUFFER_TOO_SMALL
          and length.value == 64, "%s, length %d" % (rv_name(rv), length.value))
    rv = raw.Sign(s, digest, 32, buffer, ctypes.byref(length))
    check("raw: C_Sign", rv == 0 and length.value == 64, rv_name(rv))
    expect_rv("raw: C_Sign after the operation ended",
              raw.Sign(s, digest, 32, buffer, ctypes.byref(length)),
              PyKCS11.CKR_OPERATION_NOT_INITIALIZED)
    expect_rv("raw: C_Encrypt is not supported",
              raw.Encrypt(s, digest, 32, buffer, ctypes.byref(length)),
              PyKCS11.CKR_FUNCTION_NOT_SUPPORTED)

    # Blocking waits: one ends with a removal, one with C_Finalize.
    events = os.path.join(directory, "events")
    absent = os.path.join(directory, "absent")
    open(events, "w").close()
    results = []

    def wait():
        slot = UL(99)
        results.append((raw.WaitForSlotEvent(0, ctypes.byref(slot), None), slot.value))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    check("raw: C_WaitForSlotEvent blocks", waiter.is_alive() and not results)
    open(absent, "w").close()
    waiter.join(2)
    check("raw: a blocked C_WaitForSlotEvent sees the removal", results == [(0, 0)],
          repr(results))
    expect_rv("raw: the session is gone with the token",
              raw.Sign(s, digest, 32, None, ctypes.byref(length)), PyKCS11.CKR_DEVICE_REMOVED)
    results.clear()
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    rv = raw.Finalize(None)
    waiter.join(2)
    check("raw: C_Finalize ends a blocked C_WaitForSlotEvent",
          rv == 0 and results and results[0][0] == PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED
          and time.monotonic() - start < 1, "%s, %r" % (rv_name(rv), results))
    expect_rv("raw: C_Finalize again", raw.Finalize(None), PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED)
    os.remove(events)
    os.remove(absent)


# ---- Signature verification outside the token ----------------------------

def der_integer(value):
    body = value.to_bytes(33, "big").lstrip(b"\0") or b"\0"
    if body[0] & 0x80:
        body = b"\0" + body
    return b"\x02" + bytes([len(body)]) + body


def der_signature(r_s):
    body = der_integer(int.from_bytes(r_s[:32], "big")) + der_integer(
        int.from_bytes(r_s[32:], "big"))
    return b"\x30" + bytes([len(body)]) + body


def verify_cryptography(point, digest, r_s):
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    signature = encode_dss_signature(int.from_bytes(r_s[:32], "big"),
                                     int.from_bytes(r_s[32:], "big"))
    try:
        public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


def verify_openssl(directory, digest, r_s):
    files = {name: os.path.join(directory, name) for name in ("pub.pem", "digest", "sig")}
    subprocess.run(["openssl", "pkey", "-in", os.path.join(directory, "key.pem"), "-pubout",
                    "-out", files["pub.pem"]], check=True)
    with open(files["digest"], "wb") as f:
        f.write(digest)
    with open(files["sig"], "wb") as f:
        f.write(der_signature(r_s))
    result = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                             files["pub.pem"], "-in", files["digest"], "-sigfile", files["sig"]],
                            capture_output=True)
    return result.returncode == 0


# ---- Through PyKCS11 and pkcs11-tool ---------------------------------------

def write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def log_lines(directory):
    try:
        with open(os.path.join(directory, "calls.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def pykcs11_checks(library, directory):
    lib = PyKCS11.PyKCS11Lib()
    lib.load(library)
    info = lib.getInfo()
    check("C_GetInfo", info.libraryDescription.strip() == "fake PKCS#11 token"
          and info.cryptokiVersion == (2, 40), repr(info.libraryDescription))
    token = lib.getTokenInfo(0)
    base = (PyKCS11.CKF_TOKEN_INITIALIZED | PyKCS11.CKF_USER_PIN_INITIALIZED
            | PyKCS11.CKF_LOGIN_REQUIRED | PyKCS11.CKF_RNG)
    check("token info: label, serial, flags", token.label.strip() == "test token"
          and token.serialNumber.strip() == "FAKE0001" and token.flags == base,
          "%r %r %#x" % (token.label, token.serialNumber, token.flags))
    write(directory, "pin_flags", "count_low final_try\n")
    flags = lib.getTokenInfo(0).flags
    check("pin_flags count_low final_try", flags == base | PyKCS11.CKF_USER_PIN_COUNT_LOW
          | PyKCS11.CKF_USER_PIN_FINAL_TRY, "%#x" % flags)
    write(directory, "pin_flags", "locked")
    flags = lib.getTokenInfo(0).flags
    check("pin_flags locked", flags == base | PyKCS11.CKF_USER_PIN_LOCKED, "%#x" % flags)

    check("mechanisms: CKM_ECDSA by default",
          list(lib.getMechanismList(0)) == ["CKM_ECDSA"], repr(lib.getMechanismList(0)))
    mech = lib.getMechanismInfo(0, "CKM_ECDSA")
    check("C_GetMechanismInfo(CKM_ECDSA)", mech.ulMinKeySize == 256 and mech.ulMaxKeySize == 256
          and mech.flags == PyKCS11.CKF_SIGN | PyKCS11.CKF_VERIFY | PyKCS11.CKF_HW)
    write(directory, "mechanisms", "0x1 4161\n")
    check("mechanisms file", sorted(lib.getMechanismList(0)) == ["CKM_ECDSA", "CKM_RSA_PKCS"],
          repr(lib.getMechanismList(0)))
    write(directory, "mechanisms", "0x1")

    session = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    public = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
                                  (PyKCS11.CKA_ID, KEY_ID)])
    check("public key visible before login", values_of(public) == [2], repr(public))
    mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA)
    expect_rv("CKM_ECDSA not offered: C_VerifyInit is CKR_MECHANISM_INVALID",
              rv_of(lambda: session.verify(public[0], b"x" * 32, b"y" * 64, mechanism)),
              PyKCS11.CKR_MECHANISM_INVALID)
    os.remove(os.path.join(directory, "mechanisms"))

    before = len(log_lines(directory))
    expect_rv("locked PIN: C_Login is CKR_PIN_LOCKED", rv_of(lambda: session.login(PIN)),
              PyKCS11.CKR_PIN_LOCKED)
    check("calls.log: login locked", log_lines(directory)[before:] == ["login locked"])
    os.remove(os.path.join(directory, "pin_flags"))
    private = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)]
    check("no private key before login", session.findObjects(private) == [])
    before = len(log_lines(directory))
    expect_rv("wrong PIN: CKR_PIN_INCORRECT", rv_of(lambda: session.login("0000")),
              PyKCS11.CKR_PIN_INCORRECT)
    check("calls.log: login bad", log_lines(directory)[before:] == ["login bad"])
    expect_rv("right PIN: C_Login", rv_of(lambda: session.login(PIN)), PyKCS11.CKR_OK)
    expect_rv("second C_Login: CKR_USER_ALREADY_LOGGED_IN", rv_of(lambda: session.login(PIN)),
              PyKCS11.CKR_USER_ALREADY_LOGGED_IN)
    check("calls.log: login ok, login already",
          log_lines(directory)[before + 1:] == ["login ok", "login already"])
    state = session.getSessionInfo().state
    check("session state CKS_RW_USER_FUNCTIONS", state == PyKCS11.CKS_RW_USER_FUNCTIONS,
          repr(state))

    keys = session.findObjects(private + [(PyKCS11.CKA_ID, KEY_ID)])
    check("find the private key by CKA_ID", values_of(keys) == [1], repr(keys))
    key, pub = keys[0], public[0]
    values = session.getAttributeValue(key, [PyKCS11.CKA_KEY_TYPE, PyKCS11.CKA_SIGN,
                                           PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE,
                                           PyKCS11.CKA_EC_PARAMS, PyKCS11.CKA_LABEL], True)
    values = [bytes(value) for value in values]
    check("private key attributes", values == [
        PyKCS11.CKK_EC.to_bytes(ctypes.sizeof(UL), sys.byteorder), b"\1", b"\1", b"\0",
        bytes.fromhex("06082a8648ce3d030107"), b"test key"], repr(values))
    point = bytes(session.getAttributeValue(pub, [PyKCS11.CKA_EC_POINT], True)[0])
    spki = subprocess.run(["openssl", "pkey", "-in", os.path.join(directory, "key.pem"),
                           "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
    check("CKA_EC_POINT is key.pem's point in an OCTET STRING",
          point[:2] == b"\x04\x41" and point[2:] == spki[-65:], point.hex())

    digest = os.urandom(32)
    r_s = bytes(session.sign(key, digest, mechanism))
    check("C_Sign(CKM_ECDSA) gives 64 bytes", len(r_s) == 64, str(len(r_s)))
    if ec is not None:
        check("signature verifies (cryptography)", verify_cryptography(point[2:], digest, r_s))
    check("signature verifies (openssl)", verify_openssl(directory, digest, r_s))
    check("C_Verify accepts it", session.verify(pub, digest, r_s, mechanism))
    bad = bytes([r_s[0] ^ 1]) + r_s[1:]
    check("C_Verify refuses a changed signature", not session.verify(pub, digest, bad, mechanism))
    check("C_GenerateRandom", len(session.generateRandom(100)) == 100)

    # Removal and re-insertion.
    absent = os.path.join(directory, "absent")
    open(absent, "w").close()
    check("absent: C_GetSlotList(tokenPresent) is empty", lib.getSlotList(True) == [])
    check("absent: C_GetSlotList(all) lists slot 0", lib.getSlotList(False) == [0])
    check("absent: no CKF_TOKEN_PRESENT",
          lib.getSlotInfo(0).flags & PyKCS11.CKF_TOKEN_PRESENT == 0)
    expect_rv("absent: C_GetTokenInfo", rv_of(lambda: lib.getTokenInfo(0)),
              PyKCS11.CKR_TOKEN_NOT_PRESENT)
    expect_rv("absent: C_OpenSession", rv_of(lambda: lib.openSession(0)),
              PyKCS11.CKR_TOKEN_NOT_PRESENT)
    expect_rv("absent: C_Sign on an open session is CKR_DEVICE_REMOVED",
              rv_of(lambda: session.sign(key, digest, mechanism)), PyKCS11.CKR_DEVICE_REMOVED)
    os.remove(absent)
    expect_rv("back: the old session is CKR_SESSION_HANDLE_INVALID",
              rv_of(lambda: session.sign(key, digest, mechanism)),
              PyKCS11.CKR_SESSION_HANDLE_INVALID)
    fresh = lib.openSession(0)
    check("back: a new session is not logged in",
          fresh.getSessionInfo().state == PyKCS11.CKS_RO_PUBLIC_SESSION)

    # Slot events, without blocking.
    dont_block = PyKCS11.CKF_DONT_BLOCK
    before = len(log_lines(directory))
    expect_rv("no events file: C_WaitForSlotEvent not supported",
              rv_of(lambda: lib.waitForSlotEvent(dont_block)),
              PyKCS11.CKR_FUNCTION_NOT_SUPPORTED)
    check("calls.log: wait_for_slot_event",
          log_lines(directory)[before:] == ["wait_for_slot_event"])
    open(os.path.join(directory, "events"), "w").close()
    expect_rv("events: no change is CKR_NO_EVENT", rv_of(lambda: lib.waitForSlotEvent(dont_block)),
              PyKCS11.CKR_NO_EVENT)
    open(absent, "w").close()
    check("events: removal reported on slot 0", lib.waitForSlotEvent(dont_block) == 0)
    expect_rv("events: reported once", rv_of(lambda: lib.waitForSlotEvent(dont_block)),
              PyKCS11.CKR_NO_EVENT)
    os.remove(absent)
    check("events: insertion reported on slot 0", lib.waitForSlotEvent(dont_block) == 0)
    expect_rv("events: reported once", rv_of(lambda: lib.waitForSlotEvent(dont_block)),
              PyKCS11.CKR_NO_EVENT)
    os.remove(os.path.join(directory, "events"))
    lib.lib.C_Finalize()
    check("calls.log: initialize, finalize", log_lines(directory)[-1] == "finalize"
          and "initialize" in log_lines(directory))


def pkcs11_tool_checks(library, directory):
    def tool(*args):
        return subprocess.run(["pkcs11-tool", "--module", library, *args],
                              capture_output=True, text=True)

    result = tool("-L")
    check("pkcs11-tool -L", result.returncode == 0 and "test token" in result.stdout,
          result.stdout + result.stderr)
    result = tool("-O")
    check("pkcs11-tool -O (public only)", result.returncode == 0
          and "Public Key Object; EC" in result.stdout and "Private Key" not in result.stdout,
          result.stdout + result.stderr)
    result = tool("-O", "--login", "--pin", PIN)
    check("pkcs11-tool -O --login", result.returncode == 0
          and "Private Key Object; EC" in result.stdout and "a1b2" in result.stdout,
          result.stdout + result.stderr)
    result = tool("-M")
    check("pkcs11-tool -M", result.returncode == 0 and "ECDSA" in result.stdout,
          result.stdout + result.stderr)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    library = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="fake_pkcs11.") as directory:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", os.path.join(directory, "key.pem")],
                       check=True, capture_output=True)
        write(directory, "pin", PIN + "\n")
        write(directory, "id", KEY_ID.hex() + "\n")
        write(directory, "label", "test key\n")
        write(directory, "token_label", "test token\n")
        os.environ["FAKE_PKCS11_DIR"] = directory
        for checks in (raw_checks, pykcs11_checks, pkcs11_tool_checks):
            try:
                checks(library, directory)
            except Exception as e:  # a failure the checks did not expect
                check(checks.__name__ + " ran to the end", False, "%s: %s" % (type(e).__name__, e))
    print("%d check(s) failed" % len(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
