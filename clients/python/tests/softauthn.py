"""A software WebAuthn authenticator for the tests: what a browser and a platform authenticator
return for ``navigator.credentials.create`` and ``.get``, in WebAuthn's JSON serialisation
(``credential.toJSON()``: ``RegistrationResponseJSON`` / ``AuthenticationResponseJSON``).

ES256 keys (``cryptography``), ``none`` attestation, user presence and verification, a
signature counter; discoverable credentials that carry the user handle. ``origin`` is what the
"browser" writes into ``clientDataJSON``: Gatehouse checks it against
``GATEHOUSE_WEBAUTHN_ORIGINS`` (default ``http://localhost:3000,http://localhost:8000``).
The browser test (clients/js, a Chrome DevTools virtual authenticator) covers a real browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

#: An origin Gatehouse accepts by default.
DEFAULT_ORIGIN = "http://localhost:8000"

_UP, _UV, _BE, _BS, _AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(value: Any) -> bytes:
    """CBOR (RFC 8949) of ints, bytes, str, lists and dicts: enough for an attestation object
    and a COSE key."""
    if isinstance(value, bool) or value is None:
        raise TypeError("not needed here")
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        data = value.encode()
        return _head(3, len(data)) + data
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return _head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(type(value))


@dataclass
class Passkey:
    """One discoverable credential the authenticator holds."""

    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)


@dataclass
class SoftAuthenticator:
    """A platform authenticator with user verification. ``synced`` sets the backup-eligible
    and backed-up flags, as a passkey in a password manager or a cloud keychain has them."""

    origin: str = DEFAULT_ORIGIN
    synced: bool = False
    passkeys: list[Passkey] = field(default_factory=list)

    def _flags(self, *extra: int) -> int:
        flags = _UP | _UV
        for bit in extra:
            flags |= bit
        if self.synced:
            flags |= _BE | _BS
        return flags

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """``navigator.credentials.create({publicKey})`` for the creation options JSON."""
        rp_id = options["rp"].get("id") or "localhost"
        held = {p.credential_id for p in self.passkeys if p.rp_id == rp_id}
        for excluded in options.get("excludeCredentials") or []:
            if unb64url(excluded["id"]) in held:
                raise ValueError("InvalidStateError: this authenticator already holds one")
        algorithms = [p["alg"] for p in options.get("pubKeyCredParams", [])]
        assert -7 in algorithms, f"ES256 not offered: {algorithms}"
        passkey = Passkey(
            credential_id=os.urandom(32),
            key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp_id,
            user_handle=unb64url(options["user"]["id"]),
        )
        numbers = passkey.key.public_key().public_numbers()
        cose_key = cbor(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([self._flags(_AT)])
            + struct.pack(">I", passkey.sign_count)
            + bytes(16)  # AAGUID
            + struct.pack(">H", len(passkey.credential_id))
            + passkey.credential_id
            + cose_key
        )
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.passkeys.append(passkey)
        return {
            "id": passkey.id,
            "rawId": passkey.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        passkey: Passkey | None = None,
    ) -> dict[str, Any]:
        """``navigator.credentials.get({publicKey})`` for the request options JSON: the
        newest passkey for the RP id that ``allowCredentials`` allows (any, when empty)."""
        rp_id = options.get("rpId") or "localhost"
        if passkey is None:
            allowed = {unb64url(c["id"]) for c in options.get("allowCredentials") or []}
            usable = [
                p
                for p in self.passkeys
                if p.rp_id == rp_id and (not allowed or p.credential_id in allowed)
            ]
            if not usable:
                raise ValueError("NotAllowedError: no passkey for this request")
            passkey = usable[-1]
        passkey.sign_count += 1
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([self._flags()])
            + struct.pack(">I", passkey.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = passkey.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": passkey.id,
            "rawId": passkey.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(passkey.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()
