"""A test model whose behaviour is chosen by the request body (JSON):

{"action": "echo", "value": ...}        -> returns {"echo": value}
{"action": "raise", "message": "..."}   -> raises ValueError(message)
{"action": "sleep", "seconds": N, ...}  -> sleeps N seconds, then echoes
{"action": "log", "path": P, "tag": T}  -> appends T to file P (counts executions), echoes
"""

import json
import time


def model_fn(model_dir):
    return {"loaded_from": model_dir}


def transform_fn(model, data, content_type, accept):
    request = json.loads(data)
    action = request.get("action", "echo")
    if action == "raise":
        raise ValueError(request.get("message", "boom"))
    if action == "sleep":
        time.sleep(float(request["seconds"]))
    if action == "log":
        with open(request["path"], "a") as handle:
            handle.write(request["tag"] + "\n")
        if "seconds" in request:
            time.sleep(float(request["seconds"]))
    return json.dumps({"echo": request.get("value")}), "application/json"
