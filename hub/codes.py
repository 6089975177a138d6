"""Code lists the hub answers with: AppRec status (8258), AppRec errors (8221), ebMS 2.0 error codes."""

from __future__ import annotations

from enum import StrEnum

APPREC_STATUS_OID = "2.16.578.1.12.4.1.1.8258"
APPREC_ERROR_OID = "2.16.578.1.12.4.1.1.8221"


class AppRecStatus(StrEnum):
    OK = "1"
    REJECTED = "2"  # Avvist
    OK_PART_ERROR = "3"  # OK, feil i delmelding


APPREC_STATUS_TEXT = {
    AppRecStatus.OK: "OK",
    AppRecStatus.REJECTED: "Avvist",
    AppRecStatus.OK_PART_ERROR: "OK, feil i delmelding",
}

# KITH code list 8221 "Feil i applikasjonskvittering" (general part).
APPREC_ERRORS: dict[str, str] = {
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "S03": "Tilbaketrukket sertifikat",
    "S99": "Annen feil på signatur/sertifikat",
    "E10": "Ugyldig meldingsidentifikator",
    "E20": "Lege finnes ikke",
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E32": "Pasientens navn mangler",
    "E35": "Pasienten finnes ikke i mottakersystemet",
    "E36": "Pasientopplysninger er mangelfulle",
    "X99": "Annen feil",
}


class EbmsError(StrEnum):
    """ebMS 2.0 ErrorList codes (OASIS ebMS 2.0 §4.2.3.4.1)."""

    VALUE_NOT_RECOGNIZED = "ValueNotRecognized"
    NOT_SUPPORTED = "NotSupported"
    INCONSISTENT = "Inconsistent"
    OTHER_XML = "OtherXml"
    DELIVERY_FAILURE = "DeliveryFailure"
    TIME_TO_LIVE_EXPIRED = "TimeToLiveExpired"
    SECURITY_FAILURE = "SecurityFailure"
    MIME_PROBLEM = "MimeProblem"
    UNKNOWN = "Unknown"
