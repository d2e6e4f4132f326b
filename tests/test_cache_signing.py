"""Entry signatures: what they cover and how they are checked (where the secret comes from, and
which key files are refused: test_cache_keys.py)."""

from __future__ import annotations

from phys_pipeline.cache.signing import EntrySigner


def test_verify_accepts_only_the_exact_signature_of_the_exact_parts() -> None:
    signer = EntrySigner("secret")
    good = signer.sign(b"meta", b"blob")
    assert signer.verify(good, b"meta", b"blob")
    assert not signer.verify(good, b"meta", b"blob!")
    assert not signer.verify(good, b"metab", b"lob")  # part boundaries are signed too
    assert not EntrySigner("other").verify(good, b"meta", b"blob")
    assert not signer.verify(None, b"meta", b"blob")
    assert not signer.verify("é" * 64, b"meta", b"blob")


def test_repr_never_shows_the_secret() -> None:
    assert "hunter2" not in repr(EntrySigner("hunter2"))
