#!/usr/bin/env python3
"""End-to-end checks of the local services, run by deploy/local/smoke.sh with
the kit's venv python and deploy/local/env.sh sourced.

    smoke.py mongo   insert/find/delete through pymongo ($SWITCHYARD_MONGO_URI)
    smoke.py aws     SQS queue send/receive + S3 bucket put/get via boto3
                     ($AWS_ENDPOINT_URL)
    smoke.py ort     dlopen $ORT_DYLIB_PATH, read its version through the C API,
                     and run a tiny ONNX model with onnxruntime
"""

import ctypes
import os
import sys
import uuid


def check_mongo():
    import pymongo

    uri = os.environ["SWITCHYARD_MONGO_URI"]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    assert client.admin.command("ping")["ok"] == 1
    coll = client["switchyard_smoke"]["docs"]
    key = uuid.uuid4().hex
    coll.insert_one({"_id": key, "model": "tiny", "n": 42})
    doc = coll.find_one({"_id": key})
    assert doc == {"_id": key, "model": "tiny", "n": 42}, doc
    coll.delete_one({"_id": key})
    version = client.server_info().get("version")
    client.close()
    return "ping/insert/find/delete ok (server reports MongoDB %s) at %s" % (version, uri)


def check_aws():
    import boto3

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    suffix = uuid.uuid4().hex[:12]
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    url = sqs.create_queue(QueueName="switchyard-smoke-" + suffix)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello-sqs")
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=5)
    assert [m["Body"] for m in msgs.get("Messages", [])] == ["hello-sqs"], msgs
    sqs.delete_queue(QueueUrl=url)

    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = "switchyard-smoke-" + suffix
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello-s3")
    body = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    assert body == b"hello-s3", body
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    return "SQS send/receive + S3 put/get ok at %s (region %s)" % (
        endpoint, sqs.meta.region_name)


def check_ort():
    path = os.environ.get("ORT_DYLIB_PATH", "")
    assert path and os.path.isfile(path), "ORT_DYLIB_PATH not set or missing: %r" % path

    # C API: const OrtApiBase* OrtGetApiBase(void); OrtApiBase is
    # { const OrtApi* (*GetApi)(uint32_t); const char* (*GetVersionString)(void); }
    lib = ctypes.CDLL(path)
    lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)
    base = lib.OrtGetApiBase().contents
    version = ctypes.CFUNCTYPE(ctypes.c_char_p)(base[1])().decode()

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "smoke",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"a": np.array([1, 2], np.float32), "b": np.array([3, 4], np.float32)})
    assert out.tolist() == [4.0, 6.0], out
    return "dlopen ok, C API version %s, python onnxruntime %s ran Add model" % (
        version, ort.__version__)


CHECKS = {"mongo": check_mongo, "aws": check_aws, "ort": check_ort}


def main(argv):
    names = argv or list(CHECKS)
    failed = 0
    for name in names:
        prefix = "" if len(names) == 1 else "%-6s " % name
        try:
            print("%sOK    %s" % (prefix, CHECKS[name]()))
        except Exception as exc:
            failed += 1
            print("%sFAIL  %s: %s" % (prefix, type(exc).__name__, exc))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
