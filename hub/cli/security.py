"""`hub pki init|serve-crl`, `hub sign|verify|encrypt|decrypt`, `hub cert check`: message security by hand.

Exit codes: 0 good; 1 a security check failed (permanent: the receiver rejects); 75 (EX_TEMPFAIL) a
transient failure such as an unreachable CRL; 2 usage or configuration errors.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import typer

from hub.cli.common import JsonOpt, err_console, fail, print_json, print_table
from hub.config import home

pki_app = typer.Typer(help="The test PKI: CAs, party certificates, special certificates, CRLs.")
cert_app = typer.Typer(help="Certificates: chain, usage, expiry, revocation.")

EXIT_FAILED = 1
EXIT_TEMPFAIL = 75

PkiOpt = typer.Option(None, "--pki", help="Test PKI folder (default $HUB_HOME/pki).")
PartyOpt = typer.Option(None, "--party", "-p", help="Party name in the PKI (gp, hospital, lab, ...).")


def _pki_dir(pki: Path | None) -> Path:
    return pki if pki is not None else home() / "pki"


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    if not path.is_file():
        fail(f"no such file: {path}")
    return path.read_bytes()


def _write(out: Path | None, data: bytes) -> None:
    if out is None or str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(data)
        err_console.print(f"wrote {out} ({len(data)} bytes)")


def _security_failure(exc: Exception, as_json: bool = False) -> None:
    from hub.security.errors import SecurityError

    if isinstance(exc, SecurityError) and as_json:
        print_json({"ok": False, "kind": exc.kind, "message": exc.message, "apprec_code": exc.apprec_code,
                    "ebms_code": exc.ebms_code, "transient": exc.transient})
        raise typer.Exit(EXIT_TEMPFAIL if exc.transient else EXIT_FAILED)
    if isinstance(exc, SecurityError):
        tag = "temporary failure" if exc.transient else "rejected"
        err_console.print(
            f"[bold red]{tag}:[/] {exc.message}\n"
            f"  kind {exc.kind}; AppRec {exc.apprec_code}; ebMS {exc.ebms_code}; "
            f"{'transient: try again later' if exc.transient else 'permanent'}"
        )
        raise typer.Exit(EXIT_TEMPFAIL if exc.transient else EXIT_FAILED)
    raise exc


@pki_app.command("init")
def pki_init(
    dir: Path = typer.Argument(None, help="Folder for the PKI (default $HUB_HOME/pki)."),
    party: list[str] = typer.Option(
        None, "--party", help="NAME:HERID:ORGNR, repeatable (default: gp, hospital, lab, nursinghome, hub)."
    ),
    crl_url: str = typer.Option(None, help="Base URL of the CRLs in the certificates' CRL DP."),
    force: bool = typer.Option(False, "--force", help="Replace an existing PKI in the folder."),
) -> None:
    """Create root and issuing CA, sign + enc certificates per party, test certificates and CRLs."""
    from hub.security.pki import DEFAULT_CRL_URL, PartySpec, init_pki

    target = _pki_dir(dir)
    try:
        specs = [PartySpec.parse(p) for p in party] if party else None
    except ValueError as exc:
        fail(str(exc))
        return
    try:
        lay = init_pki(target, specs, crl_url=crl_url, overwrite=force)
    except FileExistsError as exc:
        fail(f"{exc} (use --force)")
        return
    rows = [(p.name, p.her_id, p.org_no, p.display_name) for p in lay.parties]
    print_table(f"test PKI in {target}", ["Party", "HER-id", "Org.no.", "Organisation"], rows)
    typer.echo(f"trust anchors: {lay.anchors}")
    typer.echo(f"CRLs: {lay.crl_dir} (certificates point at {lay.crl_url or DEFAULT_CRL_URL}issuing.crl)")


@pki_app.command("serve-crl")
def pki_serve_crl(
    dir: Path = typer.Argument(None, help="PKI folder (default $HUB_HOME/pki)."),
    port: int = typer.Option(8079, help="Port on 127.0.0.1."),
) -> None:
    """Serve the PKI's CRLs on 127.0.0.1 until interrupted."""
    from hub.security.pki import serve_crl

    with serve_crl(_pki_dir(dir), port=port) as srv:
        typer.echo(f"serving {srv.url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _identity(pki: Path | None, party: str | None):  # noqa: ANN202 (lazy import of Identity)
    from hub.security.errors import SecurityError
    from hub.security.pki import load_identity

    if not party:
        fail("name the party (--party) or give --key and --cert")
    try:
        return load_identity(_pki_dir(pki), party)  # type: ignore[arg-type]
    except SecurityError as exc:
        fail(exc.message)


def sign(
    file: Path = typer.Argument(..., help="KITH XML document ('-' for stdin)."),
    party: str = PartyOpt,
    pki: Path = PkiOpt,
    key: Path = typer.Option(None, help="Private key PEM (instead of --party)."),
    cert: Path = typer.Option(None, help="Certificate PEM (instead of --party)."),
    algorithm: str = typer.Option("rsa-sha256", help="rsa-sha256 | rsa-sha384 | rsa-sha512 | rsa-sha1"),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default stdout)."),
) -> None:
    """Add an enveloped XMLDSig (ds:Signature as the root's last child) with the party's signing key."""
    from hub.security import keystore
    from hub.security.xmldsig import sign_enveloped

    try:
        if key and cert:
            k, c = keystore.load_private_key(key), keystore.load_certificate(cert)
        else:
            ident = _identity(pki, party)
            k, c = ident.sign_key, ident.sign_cert
        signed = sign_enveloped(_read(file), k, c, algorithm=algorithm)
    except Exception as exc:  # noqa: BLE001 - reported by kind below
        _xml_or_security(exc)
        return
    _write(out, signed)


def _xml_or_security(exc: Exception, as_json: bool = False) -> None:
    from hub.xmlsafe import XmlInputError

    if isinstance(exc, XmlInputError):
        if as_json:
            print_json({"ok": False, "kind": "xml", "message": str(exc), "apprec_code": exc.code,
                        "transient": False})
        else:
            err_console.print(f"[bold red]rejected:[/] {exc} (AppRec {exc.code})")
        raise typer.Exit(EXIT_FAILED)
    _security_failure(exc, as_json)


def _parse_at(at: str | None) -> dt.datetime | None:
    if not at:
        return None
    try:
        t = dt.datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at {at!r} is not an ISO date/time")
        raise
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def verify(
    file: Path = typer.Argument(..., help="Signed KITH XML document ('-' for stdin)."),
    cert: list[Path] = typer.Option(None, "--cert", help="Certificate(s) registered for the sender."),
    party: str = typer.Option(None, "--party", "-p", help="The sender's party name in the PKI."),
    pki: Path = PkiOpt,
    allow_sha1: bool = typer.Option(False, "--allow-sha1", help="Accept rsa-sha1/sha1 (old senders)."),
    check_cert: bool = typer.Option(True, help="Also validate the signer's certificate (chain, CRL)."),
    at: str = typer.Option(None, help="The message's time (ISO), for certificate validity; default now."),
    as_json: bool = JsonOpt,
) -> None:
    """Verify the one enveloped signature, that the signer is the registered sender, and its certificate."""
    from hub.security import keystore
    from hub.security.certs import CertificateValidator
    from hub.security.pki import load_intermediates, load_trust_anchors
    from hub.security.xmldsig import verify_enveloped

    expected = [c for p in (cert or []) for c in keystore.load_certificates(p)]
    if party:
        expected.append(_identity(pki, party).sign_cert)
    if not expected:
        err_console.print("[yellow]warning:[/] no --cert/--party: the signer is not compared with the sender")
    try:
        v = verify_enveloped(_read(file), expected_certs=expected or None, allow_sha1=allow_sha1)
        rows = [
            ("signer", v.certificate.subject.rfc4514_string()),
            ("algorithm", v.algorithm),
            ("digest", v.digest_algorithm),
        ]
        if check_cert:
            d = _pki_dir(pki)
            validator = CertificateValidator(load_trust_anchors(d), load_intermediates(d))
            report = validator.check(v.certificate, "sign", _parse_at(at))
            rows += [
                ("chain", " <- ".join(c.subject.rfc4514_string() for c in report.chain)),
                ("revocation", report.revocation),
                ("days to expiry", report.days_to_expiry),
            ]
    except Exception as exc:  # noqa: BLE001
        _xml_or_security(exc, as_json)
        return
    if as_json:
        print_json({"ok": True, **{k.replace(" ", "_"): v for k, v in rows}})
        return
    print_table("signature OK", ["", ""], rows)


def encrypt(
    file: Path = typer.Argument(..., help="Payload ('-' for stdin)."),
    to: list[Path] = typer.Option(None, "--to", help="Recipient encryption certificate(s), PEM."),
    party: list[str] = typer.Option(None, "--party", "-p", help="Recipient party name(s) in the PKI."),
    pki: Path = PkiOpt,
    out: Path = typer.Option(None, "--out", "-o", help="Output .p7m (DER; default stdout)."),
) -> None:
    """CMS EnvelopedData (AES-256-CBC, RSA PKCS#1 v1.5 key transport) for the recipients' enc certificates."""
    from hub.security import cms, keystore

    recipients = [c for p in (to or []) for c in keystore.load_certificates(p)]
    recipients += [_identity(pki, p).enc_cert for p in (party or [])]
    if not recipients:
        fail("name at least one recipient (--to CERT or --party NAME)")
    try:
        der = cms.encrypt(_read(file), recipients)
    except Exception as exc:  # noqa: BLE001
        _security_failure(exc)
        return
    _write(out, der)


def decrypt(
    file: Path = typer.Argument(..., help="CMS EnvelopedData as DER, PEM or S/MIME ('-' for stdin)."),
    party: str = PartyOpt,
    pki: Path = PkiOpt,
    key: Path = typer.Option(None, help="Private key PEM (instead of --party)."),
    cert: Path = typer.Option(None, help="Its certificate PEM (instead of --party)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default stdout)."),
    gunzip: bool = typer.Option(False, "--gunzip", help="Decompress a gzip document inside (NAV gzips "
                                "before encrypting; recognised by its content)."),
) -> None:
    """Open a CMS EnvelopedData (DER, PEM or S/MIME, as `openssl cms -outform` writes them) with the
    party's current or previous decryption key."""
    from hub.ebxml import compression
    from hub.security import cms, keystore

    try:
        if key and cert:
            keys = [(keystore.load_certificate(cert), keystore.load_private_key(key))]
        else:
            keys = _identity(pki, party).decryption_keys
        data = cms.decrypt(_read(file), keys)
        if gunzip:
            data = compression.unwrap(data)[0]
    except Exception as exc:  # noqa: BLE001
        _security_failure(exc)
        return
    if not gunzip and compression.is_gzip(data):
        err_console.print("note: the content is gzip (give --gunzip to decompress it)")
    _write(out, data)


@cert_app.command("check")
def cert_check(
    cert: Path = typer.Argument(..., help="Certificate (PEM/DER)."),
    purpose: str = typer.Option("sign", help="sign | encrypt"),
    pki: Path = PkiOpt,
    trust: list[Path] = typer.Option(None, help="Trust anchor file(s) (default: the PKI's)."),
    intermediate: list[Path] = typer.Option(None, help="Intermediate CA file(s) (default: the PKI's)."),
    at: str = typer.Option(None, help="Validate at this time (ISO); default now."),
    revocation: bool = typer.Option(True, help="Check the CRL."),
    as_json: bool = JsonOpt,
) -> None:
    """Chain to a trust anchor, key usage for the purpose, days to expiry, revocation."""
    from hub.security import keystore
    from hub.security.certs import CertificateValidator
    from hub.security.pki import load_intermediates, load_trust_anchors

    if purpose not in ("sign", "encrypt"):
        fail("--purpose is sign or encrypt")
    try:
        d = _pki_dir(pki)
        anchors = (
            [c for p in trust for c in keystore.load_certificates(p)] if trust else load_trust_anchors(d)
        )
        inter = (
            [c for p in intermediate for c in keystore.load_certificates(p)]
            if intermediate
            else (load_intermediates(d) if (d / "ca" / "issuing.pem").exists() else [])
        )
        c = keystore.load_certificate(cert)
        v = CertificateValidator(anchors, inter, check_revocation=revocation)
        r = v.check(c, purpose, _parse_at(at))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        _security_failure(exc, as_json)
        return
    facts = {
        "subject": r.subject,
        "org_no": r.org_no,
        "her_id": r.her_id,
        "purpose": purpose,
        "chain": [x.subject.rfc4514_string() for x in r.chain],
        "not_after": r.not_after.isoformat(),
        "days_to_expiry": r.days_to_expiry,
        "revocation": r.revocation,
        "crl_next_update": r.crl_next_update.isoformat() if r.crl_next_update else None,
    }
    if as_json:
        print_json({"ok": True, **facts})
        return
    rows = [(k, " <- ".join(v) if isinstance(v, list) else v) for k, v in facts.items()]
    print_table("certificate OK", ["", ""], rows)


def register(app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")
    app.add_typer(cert_app, name="cert")
    app.command("sign")(sign)
    app.command("verify")(verify)
    app.command("encrypt")(encrypt)
    app.command("decrypt")(decrypt)
