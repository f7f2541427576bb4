"""Ask the QA service a question.

    python scripts/ask.py --server http://127.0.0.1:8000 "Which condition does ICD10CM:E11.9 denote?" \
        --options "Type 2 diabetes" "Asthma" "Gout" "Migraine"
    python scripts/ask.py --server URL "Patient with CHF and COPD: first-line therapy?" --options A B C D
    python scripts/ask.py --server URL "Describe this code." --codes ICD10CM:E11.9 --max-tokens 48
    python scripts/ask.py --server URL "..." --options ... --json        # the whole response

Without --codes the server's linker finds the codes in the question; --codes (even none:
`--codes`) skips it. `$MEDTOK_SERVE_API_KEY` is sent when set.
"""

from __future__ import annotations

import argparse
import json
import sys


import httpx

from serve.client import GatewayClient, GatewayError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question")
    p.add_argument("--server", default="http://127.0.0.1:8000")
    p.add_argument("--options", nargs="+", default=None)
    p.add_argument("--codes", nargs="*", default=None)
    p.add_argument("--scoring", choices=["letter", "option"], default="letter")
    p.add_argument("--max-tokens", type=int, default=None, help="free-text answers (no --options)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--json", action="store_true", help="print the whole JSON response")
    a = p.parse_args(argv)
    client = GatewayClient(a.server, a.api_key)
    try:
        out = client.answer(a.question, a.options, a.codes, a.scoring, a.max_tokens)
    except GatewayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"error: cannot reach {a.server}: {e} (is scripts/serve_gateway.py running?)", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    ans = out["answer"]
    if "letter" in ans:
        print(f"answer: {ans['letter']}: {ans['option']}  ({ans['scoring']} scoring)")
    else:
        print(f"answer: {ans['text']}")
    for c in out["codes"]:
        where = f" '{c['mention']}' [{c['start']}:{c['end']}] score {c['score']}" if c["source"] == "linker" else ""
        print(f"  code {c['code_id']} ({c['description']}){where}{'' if c['in_prefix'] else ' (not in prefix)'}")
    t = out["timings"]
    print(f"  {out['prompt_tokens']} prompt rows; link {t['link_ms']} ms, embed {t['embed_ms']} ms, "
          f"model {t['backend_ms']} ms, total {t['total_ms']} ms; request {out['request_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
