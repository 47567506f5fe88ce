"""LitServe on the same trivial model, batching on as its docs suggest."""

import sys

import litserve as ls


class Square(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request):
        return request["x"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"y": output}


if __name__ == "__main__":
    port = int(sys.argv[1])
    server = ls.LitServer(Square(max_batch_size=1), accelerator="cpu", workers_per_device=1)
    server.run(port=port, host="127.0.0.1", generate_client_file=False)
