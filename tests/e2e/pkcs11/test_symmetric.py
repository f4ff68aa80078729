"""Secret keys through the module, as an application (PyKCS11) uses them: AES
in ECB, CBC, CBC-PAD, CTR and key wrap (RFC 3394, 5649), AES-CMAC, HMAC with
generic secrets; keys imported with C_CreateObject (CKA_VALUE) and made with
C_GenerateKey. Every result is checked against the Python `cryptography`
package's own implementation of the same algorithm (known keys, so known
answers), and the refusals against the codes PKCS#11 gives them. A token key
imported once is on every module of the fleet, and back on a cleared one.
"""

import json
import sys

import pytest

from conftest import (PIN, PYKCS11_PRELUDE, client_env, run, serves_through_a_clear,
                      skip_under_asan)

pytestmark = skip_under_asan

PRELUDE = PYKCS11_PRELUDE + r"""
def secret(session, key_type, value, token=False, label="imported"):
    return session.createObject([
        (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, key_type), (CKA_VALUE, value),
        (CKA_TOKEN, token), (CKA_LABEL, label), (CKA_ENCRYPT, True), (CKA_DECRYPT, True),
        (CKA_SIGN, True), (CKA_VERIFY, True)])

import struct

def ulong(n):
    return struct.pack("L", n)   # CK_ULONG: unsigned long

def ctr(bits, counter_block):
    return PyKCS11.Mechanism(CKM_AES_CTR, ulong(bits) + counter_block)

def in_parts(kind, key, mech, data, size):
    # C_<kind>Init, C_<kind>Update in parts of `size` bytes, C_<kind>Final,
    # each output asked for its length first (a NULL buffer), then given a
    # buffer of that length (at least one byte: PyKCS11 passes NULL for an
    # empty one).
    low = lib.lib
    init, update, final = (getattr(low, f"C_{kind}{step}") for step in ("Init", "Update", "Final"))
    rv = init(session.session, mech.to_native(), key)
    assert rv == 0, hex(rv)

    def output(call, *args):
        buf = PyKCS11.ckbytelist()
        rv = call(session.session, *args, buf)
        assert rv == 0, (kind, hex(mech.to_native().mechanism), "length", hex(rv))
        buf = PyKCS11.ckbytelist(bytes(max(len(buf), 1)))
        rv = call(session.session, *args, buf)
        assert rv == 0, (kind, hex(mech.to_native().mechanism), hex(rv))
        return bytes(buf)

    got = b""
    for i in range(0, len(data), size):
        got += output(update, PyKCS11.ckbytelist(data[i:i + size]))
    return got + output(final)
"""

KNOWN_ANSWERS = PRELUDE + r"""
import os
from cryptography.hazmat.primitives import cmac, hashes, hmac, keywrap
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives import padding

slot, session = card_session(pin=sys.argv[2])
token = sys.argv[3] == "token"
out = {}
key = bytes(range(32))
iv = bytes(range(100, 116))
data = bytes(range(256)) * 4 + b"sixteen byte end"   # whole blocks
odd = data + b"tail"                                   # not whole blocks
k = secret(session, CKK_AES, key, token)

def ref(mode, encrypt, payload, padded=False):
    if padded:
        p = padding.PKCS7(128).padder()
        payload = p.update(payload) + p.finalize()
    c = Cipher(algorithms.AES(key), mode)
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(payload) + op.finalize()

def both_ways(name, mech, plain, expected):
    got = bytes(session.encrypt(k, plain, mech))
    back = bytes(session.decrypt(k, got, mech))
    out[name] = [got == expected, back == plain]

both_ways("ecb", Raw(CKM_AES_ECB), data, ref(modes.ECB(), True, data))
both_ways("cbc", Raw(CKM_AES_CBC, iv), data, ref(modes.CBC(iv), True, data))
both_ways("cbc_pad", Raw(CKM_AES_CBC_PAD, iv), odd, ref(modes.CBC(iv), True, odd, True))
both_ways("cbc_pad_whole", Raw(CKM_AES_CBC_PAD, iv), data, ref(modes.CBC(iv), True, data, True))
both_ways("ctr", ctr(128, iv), odd, ref(modes.CTR(iv), True, odd))
kek_data = bytes(range(40))
both_ways("kw", Raw(CKM_AES_KEY_WRAP), kek_data, keywrap.aes_key_wrap(key, kek_data))
both_ways("kwp", Raw(CKM_AES_KEY_WRAP_PAD), odd[:37],
          keywrap.aes_key_wrap_with_padding(key, odd[:37]))

c = cmac.CMAC(algorithms.AES(key)); c.update(odd)
full = c.finalize()
out["cmac"] = bytes(session.sign(k, odd, Raw(CKM_AES_CMAC))) == full
out["cmac_general"] = bytes(session.sign(k, odd, Raw(CKM_AES_CMAC_GENERAL, ulong(8)))) == full[:8]
out["cmac_verify"] = bool(session.verify(k, odd, full, Raw(CKM_AES_CMAC)))
# PyKCS11's verify() answers False for CKR_SIGNATURE_INVALID.
out["cmac_bad"] = session.verify(k, odd, bytes(16), Raw(CKM_AES_CMAC))

mac_key = bytes(range(1, 21))
g = secret(session, CKK_GENERIC_SECRET, mac_key, token, "hmac")
for name, mech, algo in [("sha1", CKM_SHA_1_HMAC, hashes.SHA1()),
                         ("sha256", CKM_SHA256_HMAC, hashes.SHA256()),
                         ("sha512", CKM_SHA512_HMAC, hashes.SHA512()),
                         ("sha3_256", 0x2b1, hashes.SHA3_256())]:
    h = hmac.HMAC(mac_key, algo); h.update(odd)
    want = h.finalize()
    got = bytes(session.sign(g, odd, Raw(mech)))
    out["hmac_" + name] = [got == want, bool(session.verify(g, odd, want, Raw(mech)))]
h = hmac.HMAC(mac_key, hashes.SHA256()); h.update(odd)
want = h.finalize()
out["hmac_general"] = bytes(session.sign(g, odd, Raw(CKM_SHA256_HMAC_GENERAL, ulong(12)))) == want[:12]
out["hmac_bad"] = session.verify(g, odd, bytes(32), Raw(CKM_SHA256_HMAC))
out["hmac_short"] = rv_of(lambda: session.verify(g, odd, want[:5], Raw(CKM_SHA256_HMAC)))
out["hmac_with_aes"] = rv_of(lambda: session.sign(k, odd, Raw(CKM_SHA256_HMAC)))
out["encrypt_with_generic"] = rv_of(lambda: session.encrypt(g, data, Raw(CKM_AES_ECB)))

# Refusals, with the codes other modules give.
out["ecb_odd"] = rv_of(lambda: session.encrypt(k, odd, Raw(CKM_AES_ECB)))
out["cbc_decrypt_odd"] = rv_of(lambda: session.decrypt(k, odd, Raw(CKM_AES_CBC, iv)))
out["cbc_short_iv"] = rv_of(lambda: session.encrypt(k, data, Raw(CKM_AES_CBC, iv[:8])))
out["ctr_wraps"] = rv_of(lambda: session.encrypt(k, bytes(64), ctr(8, bytes(15) + b"\xfe")))
wrapped = bytearray(keywrap.aes_key_wrap(key, kek_data))
wrapped[3] ^= 1
out["kw_tampered"] = rv_of(lambda: session.decrypt(k, bytes(wrapped), Raw(CKM_AES_KEY_WRAP)))
out["general_too_long"] = rv_of(lambda: session.sign(k, odd, Raw(CKM_AES_CMAC_GENERAL, ulong(17))))
out["bad_value_len"] = rv_of(lambda: secret(session, CKK_AES, bytes(15)))
out["no_value"] = rv_of(lambda: session.createObject(
    [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES)]))

attrs = session.getAttributeValue(k, [CKA_KEY_TYPE, CKA_VALUE_LEN, CKA_TOKEN, CKA_ALLOWED_MECHANISMS])
allowed = struct.unpack(f"{len(attrs[3]) // 8}Q", bytes(attrs[3]))  # CK_MECHANISM_TYPE[]
out["attrs"] = [attrs[0] == CKK_AES, attrs[1], bool(attrs[2]), CKM_AES_CBC in allowed]
# CKR_ATTRIBUTE_SENSITIVE: PyKCS11 answers None for the value.
out["value_hidden"] = session.getAttributeValue(k, [CKA_VALUE])[0] is None
print(json.dumps(out))
"""


def known_answers(world, module_path, where):
    r = run([sys.executable, "-c", KNOWN_ANSWERS, module_path, PIN, where], client_env(world))
    return json.loads(r.stdout)


@pytest.mark.parametrize("where", ["session", "token"])
def test_aes_and_hmac_give_the_known_answers(world, module_path, where):
    out = known_answers(world, module_path, where)
    for mode in ["ecb", "cbc", "cbc_pad", "cbc_pad_whole", "ctr", "kw", "kwp"]:
        assert out[mode] == [True, True], (mode, out)
    assert out["cmac"] and out["cmac_general"] and out["cmac_verify"], out
    for name in ["sha1", "sha256", "sha512", "sha3_256"]:
        assert out["hmac_" + name] == [True, True], (name, out)
    assert out["hmac_general"], out
    assert out["cmac_bad"] is False and out["hmac_bad"] is False, out  # CKR_SIGNATURE_INVALID
    assert out["hmac_short"] == 0xC1, out            # CKR_SIGNATURE_LEN_RANGE
    assert out["hmac_with_aes"] == 0x63, out         # CKR_KEY_TYPE_INCONSISTENT
    assert out["encrypt_with_generic"] == 0x63, out
    assert out["ecb_odd"] == 0x21, out               # CKR_DATA_LEN_RANGE
    assert out["cbc_decrypt_odd"] == 0x41, out       # CKR_ENCRYPTED_DATA_LEN_RANGE
    assert out["cbc_short_iv"] == 0x71, out          # CKR_MECHANISM_PARAM_INVALID
    assert out["ctr_wraps"] == 0x21, out             # the 8-bit counter would wrap
    assert out["kw_tampered"] == 0x40, out           # CKR_ENCRYPTED_DATA_INVALID
    assert out["general_too_long"] == 0x71, out
    assert out["bad_value_len"] == 0x13, out         # CKR_ATTRIBUTE_VALUE_INVALID
    assert out["no_value"] == 0xD0, out              # CKR_TEMPLATE_INCOMPLETE
    assert out["attrs"] == [True, 32, where == "token", True], out
    assert out["value_hidden"], out


MULTIPART_AND_GENERATED = PRELUDE + r"""
slot, session = card_session(pin=sys.argv[2])
out = {}
listed = set(lib.getMechanismList(slot))
want = {"CKM_AES_ECB", "CKM_AES_CBC", "CKM_AES_CBC_PAD", "CKM_AES_CTR", "CKM_AES_KEY_WRAP",
        "CKM_AES_KEY_WRAP_PAD", "CKM_AES_CMAC", "CKM_AES_CMAC_GENERAL", "CKM_SHA_1_HMAC",
        "CKM_SHA256_HMAC", "CKM_SHA512_HMAC_GENERAL", "CKM_GENERIC_SECRET_KEY_GEN"}
out["listed"] = sorted(want - listed)
info = lib.getMechanismInfo(slot, "CKM_SHA256_HMAC")
out["hmac_flags"] = bool(info.flags & CKF_SIGN) and bool(info.flags & CKF_VERIFY)
aes = session.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES),
                           (CKA_VALUE_LEN, 24), (CKA_TOKEN, False), (CKA_ENCRYPT, True)],
                          PyKCS11.Mechanism(CKM_AES_KEY_GEN))
gen = session.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_GENERIC_SECRET),
                           (CKA_VALUE_LEN, 48), (CKA_TOKEN, False), (CKA_SIGN, True)],
                          PyKCS11.Mechanism(CKM_GENERIC_SECRET_KEY_GEN))
out["gen_attrs"] = list(session.getAttributeValue(gen, [CKA_KEY_TYPE, CKA_VALUE_LEN, CKA_SIGN,
                                                         CKA_ENCRYPT]))
out["gen_attrs"] = [out["gen_attrs"][0] == CKK_GENERIC_SECRET, out["gen_attrs"][1],
                    bool(out["gen_attrs"][2]), bool(out["gen_attrs"][3])]
data = bytes(range(200)) * 7
iv = bytes(range(16))
for name, mech in [("cbc_pad", Raw(CKM_AES_CBC_PAD, iv)), ("ctr", ctr(128, bytes(15) + b"\xff")),
                   ("cbc", Raw(CKM_AES_CBC, iv)), ("ecb", Raw(CKM_AES_ECB)),
                   ("kwp", Raw(CKM_AES_KEY_WRAP_PAD))]:
    plain = data if name in ("cbc_pad", "ctr", "kwp") else data[:1392]
    whole = bytes(session.encrypt(aes, plain, mech))
    parts = in_parts("Encrypt", aes, mech, plain, 333)
    back = in_parts("Decrypt", aes, mech, whole, 100)
    out["parts_" + name] = [parts == whole, back == plain,
                            bytes(session.decrypt(aes, whole, mech)) == plain]
mac = bytes(session.sign(gen, data, Raw(CKM_SHA384_HMAC)))
out["hmac_generated"] = [len(mac), bool(session.verify(gen, data, mac, Raw(CKM_SHA384_HMAC)))]
print(json.dumps(out))
"""


def test_generated_keys_and_multipart(world, module_path):
    r = run([sys.executable, "-c", MULTIPART_AND_GENERATED, module_path, PIN], client_env(world))
    out = json.loads(r.stdout)
    assert out["listed"] == [], out
    assert out["hmac_flags"], out
    assert out["gen_attrs"] == [True, 48, True, False], out
    for name in ["cbc_pad", "ctr", "cbc", "ecb", "kwp"]:
        assert out["parts_" + name] == [True, True, True], (name, out)
    assert out["hmac_generated"] == [48, True], out


FLEET = PRELUDE + r"""
slot, session = card_session(pin=sys.argv[2])
k = secret(session, CKK_AES, bytes(range(16)), True, "fleet-aes")
iv = bytes(16)
data = bytes(64)
want = bytes(session.encrypt(k, data, Raw(CKM_AES_CBC, iv)))
def burst(n):
    return sum(bytes(session.encrypt(k, data, Raw(CKM_AES_CBC, iv))) != want for _ in range(n))
print(json.dumps({"wrong": burst(30)}), flush=True)
sys.stdin.readline()
print(json.dumps({"wrong": burst(60)}), flush=True)
sys.stdin.readline()
"""


def test_an_imported_token_key_serves_on_every_module_and_comes_back(make_service, module_path,
                                                                       make_holder):
    from conftest import setup_world
    sim = setup_world(make_service(modules=3, init_delay_ms=50))
    serves_through_a_clear(sim, make_holder(sim), module_path, FLEET)
