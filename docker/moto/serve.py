"""An S3-compatible store for the Compose cluster where MinIO cannot be pulled (moto).

Serves S3 on 0.0.0.0:9000 one request at a time (moto's threaded server does not make
conditional writes atomic; S3 and MinIO do) and creates the buckets named in MOTO_BUCKETS.
Objects live in memory: they go when the container stops.
"""

import os
import threading
import time

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

PORT = 9000
os.environ["MOTO_PORT"] = str(PORT)

server = make_server("0.0.0.0", PORT, DomainDispatcherApplication(create_backend_app), threaded=False)
thread = threading.Thread(target=server.serve_forever, daemon=True)
thread.start()

s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{PORT}",
    region_name="us-east-1",
    aws_access_key_id="moto",
    aws_secret_access_key="moto",
)
for bucket in filter(None, os.environ.get("MOTO_BUCKETS", "").split(",")):
    for attempt in range(50):
        try:
            s3.create_bucket(Bucket=bucket)
            print(f"created bucket {bucket}", flush=True)
            break
        except Exception as error:  # the server may still be starting
            if attempt == 49:
                raise SystemExit(f"cannot create bucket {bucket}: {error}")
            time.sleep(0.1)
print(f"serving S3 on 0.0.0.0:{PORT}", flush=True)
thread.join()
