"""A test model whose behaviour is chosen by the request body (JSON):

{"action": "echo", "value": ...}        -> returns {"echo": value}
{"action": "raise", "message": "..."}   -> raises ValueError(message)
{"action": "sleep", "seconds": N, ...}  -> sleeps N seconds, then echoes
{"action": "log", "path": P, "tag": T}  -> appends T to file P (counts executions), echoes
{"action": "print", "text": T}          -> prints T (stdout) and T (stderr), then echoes
{"action": "segfault"}                  -> crashes its process in native code

With the environment variable MODEL_LABEL set (the model's PrimaryContainer.Environment),
every answer also carries {"model": MODEL_LABEL}: which model served it.
"""

import json
import os
import sys
import time

LABEL = os.environ.get("MODEL_LABEL")


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
    if action == "print":
        print("stdout: " + request["text"])
        print("stderr: " + request["text"], file=sys.stderr)
    if action == "segfault":
        import ctypes

        ctypes.string_at(0)
    answer = {"echo": request.get("value")}
    if LABEL:
        answer["model"] = LABEL
    return json.dumps(answer), "application/json"
