"""`python -m elm_core.native`: build the native time loops now (else the first run builds them) and say
whether they are in use. Exits 0 either way: without a compiler ELM Lab runs on the Python loops."""

import json

from elm_core.native import status

if __name__ == "__main__":
    print(json.dumps(status()))
