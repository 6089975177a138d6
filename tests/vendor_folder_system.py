"""A vendor's EPJ system as the conformance runner meets it: plain KITH XML files in a folder.

Written for the tests WITHOUT importing `hub`: it reads, validates (xmlschema, against the XSD files
it is given) and answers Dialogmelding 1.0 and PLO Innleggelsesrapport 1.5 messages the way a
communication module does, one AppRec per receiver of its own the message names (primary receiver,
copy receiver: MsgHead OtherReceiver with RoleReceiver COP; AppRec sheet #7-#11), and writes the
Dialogmelding the tester orders. It knows only the folder layout of `folder:DIR`:

    DIR/in/*.xml        messages for the system (it takes them)
    DIR/out/*.xml       everything it sends: AppRecs and its own messages
    DIR/orders/*.json   what the tester asks it to send
    DIR/patients.json   the test patients registered in it

Behaviours (--behaviour): correct | always-ok | wrong-original-id | no-mirror | mute | answers-apprecs |
copy-as-primary (answers as the primary receiver where it is the copy receiver) | one-apprec (one
AppRec per message where two of its receivers are named).
Runs until DIR/stop exists.

    python tests/vendor_folder_system.py DIR --her 87010 --service 87011 --name "Folder EPJ" --schemas schemas
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import uuid
from datetime import datetime
from pathlib import Path

import xmlschema
from lxml import etree

MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
DIALOG = "http://www.kith.no/xmlstds/dialog/2006-10-11"
INNLEGGELSESRAPPORT = "http://www.kith.no/xmlstds/po/Innleggelsesrapport/2009-06-30"
PAYLOAD_SCHEMAS = {DIALOG: "Dialogmelding-v1.0.xsd", INNLEGGELSESRAPPORT: "PLO-Innleggelsesrapport-v1.5.xsd"}
APPREC = "http://www.kith.no/xmlstds/apprec/2004-11-21"
ERROR_OID = "2.16.578.1.12.4.1.1.8221"
HER_OID = "2.16.578.1.12.4.1.1.9051"
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TEXTS = {"T01": "Ikke XML / ikke 'well formed' / uleselig", "T02": "XML validerer ikke",
         "T10": "Støtter ikke meldingsformatet", "E10": "Ugyldig meldingsidentifikator",
         "E21": "Mottaker finnes ikke", "E30": "Pasientens fødselsnummer mangler",
         "E31": "Pasientens fødselsnummer er feil", "E35": "Pasienten finnes ikke i mottakersystemet"}
N = {"m": MH}


def fnr_ok(fnr: str) -> bool:
    if not re.fullmatch(r"\d{11}", fnr):
        return False
    d = [int(c) for c in fnr]
    k1 = 11 - sum(a * b for a, b in zip((3, 7, 6, 1, 8, 9, 4, 5, 2), d[:9], strict=True)) % 11
    k2 = 11 - sum(a * b for a, b in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), d[:10], strict=True)) % 11
    return (k1 % 11 if k1 != 10 else -1) == d[9] and (k2 % 11 if k2 != 10 else -1) == d[10]


def level(org: etree._Element | None) -> dict:
    """Name and HER-id of an Organisation element, and the organisation below it."""
    if org is None:
        return {}
    her = org.xpath("m:Ident[m:TypeId/@V='HER']/m:Id/text()", namespaces=N)
    sub = org.find(f"{{{MH}}}Organisation")
    return {"name": org.findtext(f"{{{MH}}}OrganisationName") or "", "her": her[0] if her else "",
            "sub": level(sub) if sub is not None else {}}


class System:
    def __init__(self, root: Path, her: str, services: list[str], name: str, schemas: Path, behaviour: str):
        self.root, self.her, self.services, self.name, self.behaviour = root, her, services, name, behaviour
        self.schemas = {ns: xmlschema.XMLSchema([str((schemas / "MsgHead-v1_2.xsd").resolve()),
                                                 str((schemas / name).resolve())])
                        for ns, name in PAYLOAD_SCHEMAS.items()}
        self.schema = self.schemas[DIALOG]
        self.apprec_schema = xmlschema.XMLSchema(str((schemas / "AppRec-v1.0.xsd").resolve()))
        self.seen: set[str] = set()
        self.done_orders: set[str] = set()
        self.counter = 0
        for sub in ("in", "out", "orders"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # --- the folder ---------------------------------------------------------------------------------------

    def run(self, poll: float) -> None:
        while not (self.root / "stop").exists():
            for path in sorted((self.root / "in").glob("*.xml"), key=lambda p: p.stat().st_mtime_ns):
                data = path.read_bytes()
                path.unlink()
                if self.behaviour != "mute":
                    self.receive(data)
            for path in sorted((self.root / "orders").glob("*.json")):
                if path.name not in self.done_orders:
                    self.done_orders.add(path.name)
                    if self.behaviour != "mute":
                        self.produce(json.loads(path.read_text(encoding="utf-8")))
            time.sleep(poll)

    def put(self, data: bytes) -> None:
        name = f"{uuid.uuid4()}.xml"
        tmp = self.root / "out" / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / "out" / name)

    # --- receiving ---------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        try:
            tree = etree.fromstring(data, parser).getroottree()
        except etree.XMLSyntaxError:
            return  # unreadable: nobody to answer; it goes to the error log
        root = tree.getroot()
        if root.tag == f"{{{APPREC}}}AppRec":
            if self.behaviour == "answers-apprecs":  # wrong: an AppRec is final (sheet #13)
                self.put(self.answer_apprec(root))
            return  # an AppRec to us: filed with the message it answers, never answered
        if root.tag != f"{{{MH}}}MsgHead":
            return
        info = root.find("m:MsgInfo", N)
        msg_id = info.findtext("m:MsgId", namespaces=N) or ""
        sender = info.find("m:Sender/m:Organisation", N)
        receiver = info.find("m:Receiver/m:Organisation", N)
        copies = info.xpath("m:OtherReceiver[m:RoleReceiver/@V='COP']/m:Organisation", namespaces=N)
        # Each receiver named in our organisation answers for itself (primary: SPR, copy: COP).
        ours = [(org, role) for org, role in [(receiver, "SPR"), *((c, "COP") for c in copies)]
                if level(org).get("her") == self.her]
        if not ours:
            sub_her = level(receiver).get("sub", {}).get("her", "")
            if sub_her not in self.services:
                return  # not ours at all (sheet #21)
            ours = [(receiver, "SPR")]
        if msg_id and msg_id in self.seen:
            return  # a duplicate: ignored (sheet #12, #41)
        self.seen.add(msg_id)
        if self.behaviour == "copy-as-primary":  # wrong: a copy receiver is not the primary one (#10)
            ours = [(receiver, "SPR") for _org, _role in ours]
        if self.behaviour == "one-apprec":  # wrong: one AppRec per receiver of ours (#11)
            ours = ours[:1]
        for org, role in ours:
            codes = self.judge(tree, info, level(org))
            if self.behaviour == "always-ok":
                codes = []
            self.put(self.apprec(info, msg_id, sender, org, codes, role))

    def judge(self, tree: etree._ElementTree, info: etree._Element, to: dict) -> list[str]:
        if tree.docinfo.doctype:
            return ["T01"]  # no DTDs in KITH messages: not read further
        content = tree.getroot().find("m:Document/m:RefDoc/m:Content", N)
        payload = content[0] if content is not None and len(content) else None
        schema = self.schemas.get(etree.QName(payload).namespace) if payload is not None else None
        if schema is None:
            return ["T10"]
        if not schema.is_valid(tree):
            return ["T02"]
        codes = []
        if not UUID.match(info.findtext("m:MsgId", namespaces=N) or ""):
            codes.append("E10")
        sub_her = to.get("sub", {}).get("her", "")
        if sub_her and sub_her not in self.services:
            codes.append("E21")
        fnr = info.xpath("m:Patient/m:Ident[m:TypeId/@V='FNR']/m:Id/text()", namespaces=N)
        if not fnr:
            codes.append("E30")
        elif not fnr_ok(fnr[0]):
            codes.append("E31")
        elif fnr[0] not in self.patients():
            codes.append("E35")
        return codes

    def patients(self) -> set[str]:
        path = self.root / "patients.json"
        if not path.exists():
            return set()
        return {p.get("ident") for p in json.loads(path.read_text(encoding="utf-8"))}

    def apprec(self, info: etree._Element, msg_id: str, sender: etree._Element | None,
               receiver: etree._Element | None, codes: list[str], role: str = "SPR") -> bytes:
        a = f"{{{APPREC}}}"
        root = etree.Element(a + "AppRec", nsmap={None: APPREC})

        def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
            el = etree.SubElement(parent, a + tag, {k: v for k, v in attrs.items() if v})
            if text is not None:
                el.text = text
            return el

        sub(root, "MsgType", V="APPREC", DN="Applikasjonskvittering")
        sub(root, "MIGversion", "1.0 2004-11-21")
        sub(root, "GenDate", datetime.now().replace(microsecond=0).isoformat())
        sub(root, "Id", str(uuid.uuid4()))
        mirror = self.behaviour != "no-mirror"
        roles = {"Sender": role, "Receiver": "RECEIVER"}  # AppRec 1.0 (unit sheet #9)
        texts = {"SPR": "Tjenesteyter", "COP": "Kopimottaker", "RECEIVER": "Mottaker"}
        for side, party in (("Sender", level(receiver)), ("Receiver", level(sender))):
            if not mirror:  # only our own organisation, and the sender's HER-id: not the addresses written
                party = {"name": self.name, "her": self.her, "sub": {}} if side == "Sender" else \
                    {"name": "", "her": party.get("her", ""), "sub": {}}
            el = sub(root, side)
            sub(el, "Role", V=roles[side], DN=texts[roles[side]])
            inst = sub(sub(el, "HCP"), "Inst")
            sub(inst, "Name", party.get("name") or "-")
            sub(inst, "Id", party.get("her", ""))
            sub(inst, "TypeId", V="HER", DN="HER-id")
            if party.get("sub"):
                dept = sub(inst, "Dept")
                sub(dept, "Name", party["sub"].get("name") or "-")
                sub(dept, "Id", party["sub"].get("her", ""))
                sub(dept, "TypeId", V="HER", DN="HER-id")
        sub(root, "Status", V="2" if codes else "1", DN="Avvist" if codes else "OK")
        for code in codes:
            sub(root, "Error", V=code, S=ERROR_OID, DN=TEXTS.get(code, code))
        orig = sub(root, "OriginalMsgId")
        type_ = info.find("m:Type", N)
        sub(orig, "MsgType", V=type_.get("V", "") if type_ is not None else "",
            DN=type_.get("DN", "") if type_ is not None else "")
        sub(orig, "IssueDate", info.findtext("m:GenDate", namespaces=N) or "")
        if self.behaviour == "wrong-original-id":
            self.counter += 1
            msg_id = f"EPJ-{self.counter:06d}"
        sub(orig, "Id", msg_id)
        out = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        self.apprec_schema.validate(etree.fromstring(out))  # a vendor's own self-check before sending
        return out

    def answer_apprec(self, got: etree._Element) -> bytes:
        a = f"{{{APPREC}}}"
        out = etree.fromstring(etree.tostring(got))
        for sig in out.findall("{http://www.w3.org/2000/09/xmldsig#}Signature"):
            out.remove(sig)
        out.find(a + "Id").text = str(uuid.uuid4())
        sender, receiver = out.find(a + "Sender"), out.find(a + "Receiver")
        sender.tag, receiver.tag = a + "Receiver", a + "Sender"
        out.remove(sender)
        out.insert(list(out).index(receiver) + 1, sender)
        orig = out.find(a + "OriginalMsgId")
        orig.find(a + "MsgType").set("V", "APPREC")
        orig.find(a + "IssueDate").text = got.findtext(a + "GenDate")
        orig.find(a + "Id").text = got.findtext(a + "Id")
        return etree.tostring(out, xml_declaration=True, encoding="UTF-8")

    # --- sending -----------------------------------------------------------------------------------------

    def produce(self, order: dict) -> None:
        if order.get("message") != "Dialogmelding" or order.get("version") != "1.0":
            return  # the tester cannot make this system write anything else
        m = f"{{{MH}}}"
        root = etree.Element(m + "MsgHead", nsmap={None: MH})

        def sub(parent: etree._Element, tag: str, text: str | None = None, ns: str = m,
                **attrs: str) -> etree._Element:
            el = etree.SubElement(parent, ns + tag, attrs)
            if text is not None:
                el.text = text
            return el

        def organisation(parent: etree._Element, name: str, her: str, below: tuple[str, str] | None) -> None:
            org = sub(parent, "Organisation")
            sub(org, "OrganisationName", name)
            ident = sub(org, "Ident")
            sub(ident, "Id", her)
            sub(ident, "TypeId", V="HER", DN="HER-id", S=HER_OID)
            if below:
                organisation(org, below[0], below[1], None)

        now = datetime.now().replace(microsecond=0)
        info = sub(root, "MsgInfo")
        sub(info, "Type", V="DIALOG_FORESPORSEL", DN="Forespørsel")
        sub(info, "MIGversion", "v1.2 2006-05-24")
        sub(info, "GenDate", now.isoformat())
        sub(info, "MsgId", str(uuid.uuid4()))
        sub(info, "Ack", V="J", DN="Ja")
        organisation(sub(info, "Sender"), self.name, self.her,
                     (f"{self.name} legekontor", self.services[0]) if self.services else None)
        org_name, _, service_name = str(order.get("receiver_name", "")).partition(" / ")
        org_her = str(order.get("receiver_org_her") or "")
        receiver = sub(info, "Receiver")
        if org_her and org_her != str(order["receiver_her"]):
            service = (service_name or "-", str(order["receiver_her"]))
            organisation(receiver, org_name or "-", org_her, service)
        else:
            organisation(receiver, org_name or "-", str(order["receiver_her"]), None)
        given, _, family = order["patient"]["name"].rpartition(" ")
        patient = sub(info, "Patient")
        sub(patient, "FamilyName", family)
        sub(patient, "GivenName", given)
        ident = sub(patient, "Ident")
        sub(ident, "Id", order["patient"]["fnr"])
        sub(ident, "TypeId", V="FNR", DN="Fødselsnummer", S="2.16.578.1.12.4.1.1.8116")
        ref = sub(sub(root, "Document"), "RefDoc")
        sub(ref, "IssueDate", V=now.isoformat())
        sub(ref, "MsgType", V="XML", DN="XML-instans")
        d = f"{{{DIALOG}}}"
        dialog = etree.SubElement(sub(ref, "Content"), d + "Dialogmelding", nsmap={None: DIALOG})
        question = etree.SubElement(dialog, d + "Foresporsel")
        etree.SubElement(question, d + "TypeForesp", V="1", DN="Helseopplysninger",
                         S="2.16.578.1.12.4.1.1.9152")
        etree.SubElement(question, d + "Sporsmal").text = "Ber om oppdatert legemiddelliste."
        out = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        self.schema.validate(etree.fromstring(out))
        self.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--her", required=True)
    ap.add_argument("--service", action="append", default=[])
    ap.add_argument("--name", required=True)
    ap.add_argument("--schemas", type=Path, required=True)
    ap.add_argument("--behaviour", default="correct",
                    choices=("correct", "always-ok", "wrong-original-id", "no-mirror", "mute",
                             "answers-apprecs", "copy-as-primary", "one-apprec"))
    ap.add_argument("--poll", type=float, default=0.05)
    a = ap.parse_args()
    System(a.dir, a.her, a.service, a.name, a.schemas, a.behaviour).run(a.poll)


if __name__ == "__main__":
    main()
