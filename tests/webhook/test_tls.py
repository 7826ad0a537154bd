"""The certificate is reloaded when cert-manager rewrites its files: new connections get the new one, and
a pair that does not load keeps the old one in service."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import trustme

from agent.webhook.tls import CertificateError, ReloadingCertificate
from tests.webhook.conftest import Tls, Webhook
from tests.webhook.helpers import DB_REF, make_pod, pod_annotations, review


async def test_a_rotated_certificate_is_served_to_new_connections(webhook: Webhook) -> None:
    first = await webhook.served_certificate()
    renewed = webhook.tls.issue()
    assert renewed != first
    assert webhook.certificate.check() is True
    assert await webhook.served_certificate() == renewed
    assert webhook.certificate.check() is False  # nothing changed since
    # and reviews still work over the renewed certificate
    status, body = await webhook.post(review(make_pod(pod_annotations(inject="true", secret_db=DB_REF))))
    assert status == 200
    assert body["response"]["allowed"] is True


async def test_the_watcher_reloads_by_itself(webhook: Webhook) -> None:
    watcher = asyncio.create_task(webhook.certificate.watch(0.05))
    try:
        renewed = webhook.tls.issue()
        deadline = time.monotonic() + 10
        while await webhook.served_certificate() != renewed:
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_a_half_written_pair_keeps_the_old_certificate(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.webhook")
    first = await webhook.served_certificate()
    # The new certificate with the old key: what a reader sees between the two file updates.
    old_key = webhook.tls.key_file.read_bytes()
    renewed = webhook.tls.issue()
    new_key = webhook.tls.key_file.read_bytes()
    webhook.tls.key_file.write_bytes(old_key)
    assert webhook.certificate.check() is False
    assert webhook.certificate.check() is False
    assert await webhook.served_certificate() == first
    warnings = [r for r in caplog.records if "do not load" in r.getMessage()]
    assert len(warnings) == 1  # once per broken state, not once per check
    # The key arrives: the renewed certificate goes into service.
    webhook.tls.key_file.write_bytes(new_key)
    assert webhook.certificate.check() is True
    assert await webhook.served_certificate() == renewed


async def test_missing_files_keep_the_old_certificate(webhook: Webhook) -> None:
    first = await webhook.served_certificate()
    webhook.tls.cert_file.unlink()
    assert webhook.certificate.check() is False
    assert await webhook.served_certificate() == first


def test_files_that_do_not_load_at_start_are_one_clear_error(tls: Tls) -> None:
    other = trustme.CA().issue_cert("x.example")
    other.private_key_pem.write_to_path(str(tls.key_file))
    with pytest.raises(
        CertificateError, match=r"^cannot load the TLS certificate .*tls\.crt and key .*tls\.key: "
    ):
        ReloadingCertificate(tls.cert_file, tls.key_file)
    with pytest.raises(CertificateError, match="No such file or directory"):
        ReloadingCertificate(tls.cert_file.with_name("absent.crt"), tls.key_file)
