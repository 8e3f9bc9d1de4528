"""A model that misbehaves as asked by the request body (JSON):

{"action": "echo", "value": V}           -> {"echo": V}
{"action": "hang"}                       -> never returns
{"action": "exit"}                       -> the process dies mid-request (os._exit)
{"action": "garbage", "size": N}         -> N bytes that are not JSON, whatever Accept says
{"action": "huge", "mib": N}             -> an N MiB response
{"action": "not-bytes"}                  -> returns a dict (the toolkit wants bytes or str)
{"action": "content-type", "value": T}   -> "{}" with the content type T
"""

import json
import os
import time


def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    request = json.loads(data)
    action = request.get("action")
    if action == "hang":
        while True:
            time.sleep(60)
    if action == "exit":
        os._exit(3)
    if action == "garbage":
        return bytes(range(256)) * (int(request.get("size", 256)) // 256), accept
    if action == "huge":
        return b"x" * (int(request["mib"]) * 1024 * 1024), "application/octet-stream"
    if action == "not-bytes":
        return {"not": "bytes"}
    if action == "content-type":
        return b"{}", request["value"]
    return json.dumps({"echo": request.get("value")}), "application/json"
