#!/usr/bin/python3
"""The demo's application: a PKCS#11 client that signs in a loop.

It loads libpreloadrun-pkcs11 through PyKCS11, opens the slot of a softcard,
logs in, finds an EC key by label and signs a new message with it again and
again for a fixed time, checking every signature with the public key. Once a
second it prints one line of progress. It is one long-running process, as a
real application is: under preloadrun, the module reloads the key onto HSMs
that were cleared or enrolled while it runs.

Exit status: 0 when every signature was made and verified, 1 when any failed,
2 when it could not start (module, slot, login or key), 130 on SIGINT and
143 on SIGTERM.
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import time

try:
    import PyKCS11
except ImportError:
    sys.exit("demo_client: PyKCS11 is missing (Debian package python3-pykcs11)")


class Stop(BaseException):
    """Raised by the signal handler. Not an Exception, so that no `except
    Exception` on the way (the software check of a signature) can swallow it."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def on_signal(signum, _frame):
    raise Stop(128 + signum)


def ec_point(raw):
    """CKA_EC_POINT is a DER OCTET STRING holding the point; accept it bare too."""
    data = bytes(raw)
    if len(data) >= 2 and data[0] == 0x04 and data[1] == len(data) - 2:
        return data[2:]
    return data


class Verifier:
    """Checks signatures with the public key outside the HSMs when the
    cryptography package is there, else with C_Verify through the module."""

    def __init__(self, session, public_key, mechanism):
        self.session = session
        self.public_key = public_key
        self.mechanism = mechanism
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec, utils
        except ImportError:
            self.software = None
            self.name = "C_Verify (through the module)"
            return
        point = ec_point(session.getAttributeValue(public_key, [PyKCS11.CKA_EC_POINT])[0])
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self.software = (key, ec, utils, hashes)
        self.name = "the public key, in software (python3-cryptography)"

    def check(self, message, signed, signature):
        """message: what was signed with ECDSA-SHA256; signed: what was given
        to C_Sign (the message, or its digest for CKM_ECDSA)."""
        signature = bytes(signature)
        if self.software is None:
            return self.session.verify(self.public_key, signed, signature, self.mechanism)
        key, ec, utils, hashes = self.software
        half = len(signature) // 2
        der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                         int.from_bytes(signature[half:], "big"))
        try:
            key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            return True
        except Exception:  # cryptography.exceptions.InvalidSignature
            return False


def open_session(lib, token):
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == token:
            mechanisms = {PyKCS11.CKM[m] if isinstance(m, str) else m
                          for m in lib.getMechanismList(slot)}
            return slot, lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION), mechanisms
    raise RuntimeError(f"no token labelled '{token}'")


def find_one(session, cls, label):
    found = session.findObjects([(PyKCS11.CKA_CLASS, cls), (PyKCS11.CKA_LABEL, label)])
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} objects of class {PyKCS11.CKO[cls]} labelled "
                           f"'{label}', expected 1")
    return found[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="the PKCS#11 module to load")
    parser.add_argument("--token", required=True, help="label of the softcard's token")
    parser.add_argument("--label", required=True, help="label of the EC key")
    parser.add_argument("--pin", default="any PIN",
                        help="the PIN (any PIN once preloadrun has loaded the token)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to sign")
    parser.add_argument("--ready-file", help="written once the first signature is verified")
    parser.add_argument("--result-file", help="where to write the counts, as JSON")
    args = parser.parse_args()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    parent = os.getppid()
    made = errors = 0
    first_errors = []
    started = time.monotonic()
    status = 0
    try:
        try:
            lib = PyKCS11.PyKCS11Lib()
            lib.load(args.module)
            slot, session, mechanisms = open_session(lib, args.token)
            session.login(args.pin)
            key = find_one(session, PyKCS11.CKO_PRIVATE_KEY, args.label)
            public_key = find_one(session, PyKCS11.CKO_PUBLIC_KEY, args.label)
        except (PyKCS11.PyKCS11Error, RuntimeError) as e:
            print(f"client: cannot start: {e}", flush=True)
            return 2
        if PyKCS11.CKM_ECDSA_SHA256 in mechanisms:
            mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256, None)
            name, prehash = "CKM_ECDSA_SHA256", False
        else:
            mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
            name, prehash = "CKM_ECDSA over a SHA-256 digest", True
        verifier = Verifier(session, public_key, mechanism)
        print(f"client: token '{args.token}' in slot {slot}: logged in with PIN '{args.pin}'")
        print(f"client: signing with '{args.label}' ({name}) for {args.seconds:g} s, checking "
              f"each signature with {verifier.name}", flush=True)

        started = time.monotonic()
        deadline = started + args.seconds
        next_report = started + 1.0
        last_made = 0
        ready = args.ready_file is None
        while time.monotonic() < deadline:
            if os.getppid() != parent:
                print("client: preloadrun is gone; stopping", flush=True)
                errors += 1
                break
            message = b"preloadrun demo, message %d" % (made + errors)
            try:
                data = hashlib.sha256(message).digest() if prehash else message
                signature = session.sign(key, data, mechanism)
                if not verifier.check(message, data, signature):
                    raise RuntimeError("signature does not verify")
                made += 1
            except (PyKCS11.PyKCS11Error, RuntimeError) as e:
                errors += 1
                if len(first_errors) < 5:
                    first_errors.append(str(e))
                    print(f"client: ERROR at {time.monotonic() - started:.2f} s: {e}",
                          flush=True)
            if not ready and made > 0:
                with open(args.ready_file + ".tmp", "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.rename(args.ready_file + ".tmp", args.ready_file)
                ready = True
            now = time.monotonic()
            if now >= next_report:
                print(f"client: {now - started:5.1f} s  {made:6d} signatures verified  "
                      f"{errors} errors  ({made - last_made} in the last second)", flush=True)
                last_made = made
                next_report += 1.0
        try:
            session.logout()
            session.closeSession()
        except PyKCS11.PyKCS11Error:
            pass
    except Stop as stop:
        status = stop.status
        print(f"client: stopped by signal {status - 128}", flush=True)
    elapsed = time.monotonic() - started
    if status == 0:
        status = 0 if errors == 0 and made > 0 else 1
        print(f"client: done: {made} signatures verified in {elapsed:.1f} s, {errors} errors",
              flush=True)
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump({"signatures": made, "errors": errors, "seconds": round(elapsed, 2),
                       "first_errors": first_errors, "status": status}, f)
    return status


if __name__ == "__main__":
    sys.exit(main())
