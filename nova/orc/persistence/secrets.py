"""Secrets of a flow at rest: sealed with ``[orc] secret_key`` or not kept.

A flow's secrets (the admin password the API generated or the user gave,
injected files) are needed by a conductor that resumes the flow after its
first conductor died, but must never be readable in the journal. With
``[orc] secret_key`` set (the same on every conductor), they are sealed with
Fernet (AES-128-CBC and HMAC-SHA256, ``cryptography``) into the flow's
journal entry and unsealed by the conductor that resumes it. Without a key
they live only in the memory of the conductor that took the request, and a
resumed flow that still needs them reverts with a fault saying so.
"""

import base64
import hashlib

from cryptography import fernet
from oslo_serialization import jsonutils

import nova.conf
from nova.orc import conf as orc_conf  # noqa: F401 - registers [orc]

CONF = nova.conf.CONF


def _fernet():
    key = CONF.orc.secret_key
    if not key:
        return None
    # any passphrase: its SHA-256 is the 32-byte Fernet key
    digest = hashlib.sha256(key.encode('utf-8')).digest()
    return fernet.Fernet(base64.urlsafe_b64encode(digest))


def seal(secrets):
    """``secrets`` (a JSON-serialisable dict) sealed as a str, or None
    when ``[orc] secret_key`` is unset or there is nothing to seal."""
    box = _fernet()
    if box is None or not any(secrets.values()):
        return None
    return box.encrypt(jsonutils.dump_as_bytes(secrets)).decode('ascii')


def unseal(sealed):
    """The dict :func:`seal` sealed.

    :raises ValueError: no key configured, or a key that did not seal it
        (the message says which)
    """
    box = _fernet()
    if box is None:
        raise ValueError('[orc] secret_key is not set on this conductor')
    try:
        return jsonutils.loads(box.decrypt(sealed.encode('ascii')))
    except fernet.InvalidToken:
        raise ValueError('[orc] secret_key of this conductor is not the key '
                         'the secrets were sealed with')


#: what :func:`key_check` seals
_KEY_CHECK = b'nova-orc secret_key'


def key_check():
    """A token only a conductor with the same ``[orc] secret_key`` can
    open (:func:`same_key`), for a job's details: who may run a job whose
    secrets are sealed. No more exposed than the sealed secrets themselves
    (both are Fernet tokens of the key). None without a key."""
    box = _fernet()
    return None if box is None else box.encrypt(_KEY_CHECK).decode('ascii')


def same_key(token):
    """Whether this conductor's ``[orc] secret_key`` made ``token`` (a
    :func:`key_check`); False without a key or a token."""
    box = _fernet()
    if box is None or not token:
        return False
    try:
        return box.decrypt(token.encode('ascii')) == _KEY_CHECK
    except (fernet.InvalidToken, ValueError, TypeError):
        return False
