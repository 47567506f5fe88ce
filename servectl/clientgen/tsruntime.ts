// --- client runtime: copied into generated clients from here ---
const DEFAULT_URL = "http://127.0.0.1:8000";
const RETRY_STATUSES = [429, 503];

type JsonBody<K extends keyof operations> = operations[K] extends {
  requestBody: { content: { "application/json": infer B } };
}
  ? B
  : never;
type JsonAnswer<K extends keyof operations> = operations[K]["responses"] extends {
  200: { content: { "application/json": infer A } };
}
  ? A
  : never;
type StreamChunk<K extends keyof operations, M extends string> = operations[K]["responses"] extends {
  200: { content: infer C };
}
  ? M extends keyof C
    ? C[M]
    : never
  : never;

/** An answer that is not a success: its HTTP status, request id and body (JSON when it is). */
export class APIError extends Error {
  constructor(
    readonly status: number,
    readonly requestId: string | null,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}: ${describe(body)} (request id ${requestId})`);
    this.name = "APIError";
  }
}

/** An error sent as the last event of a stream that had started (its status was 200). */
export class StreamError extends APIError {}

export interface ClientOptions {
  /** Default: $SERVECTL_URL (Node), then the deployment's address. */
  baseUrl?: string;
  /** Default: $SERVECTL_API_KEY (Node). */
  apiKey?: string;
  timeoutMs?: number;
  /** 429 and 503 answers are retried this many times, honouring Retry-After. */
  retries?: number;
  backoffMs?: number;
  maxDelayMs?: number;
  fetch?: typeof fetch;
}

function env(name: string): string | undefined {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env?.[name];
}

function describe(body: unknown): string {
  if (body !== null && typeof body === "object" && "error" in body) {
    const error = (body as { error: unknown }).error;
    if (error !== null && typeof error === "object" && "message" in error) {
      return String((error as { message: unknown }).message);
    }
    return String(error);
  }
  return String(typeof body === "string" ? body : JSON.stringify(body)).slice(0, 500);
}

async function apiError(response: Response): Promise<APIError> {
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return new APIError(response.status, response.headers.get("x-request-id"), body);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lines of an NDJSON or SSE stream in, JSON values out; error events throw. */
class Events {
  private event = "";
  finished = false;

  constructor(
    private readonly sse: boolean,
    private readonly done: string | null,
    private readonly requestId: string | null,
  ) {}

  feed(line: string): unknown[] {
    if (!this.sse) {
      if (!line.trim()) return [];
      const value = JSON.parse(line) as unknown;
      if (value !== null && typeof value === "object" && Object.keys(value).length === 1 && "error" in value) {
        const error = (value as { error: unknown }).error;
        if (error !== null && typeof error === "object" && "type" in error && "message" in error) {
          throw new StreamError(200, this.requestId, value);
        }
      }
      return [value];
    }
    if (!line) {
      this.event = "";
    } else if (line.startsWith("event:")) {
      this.event = line.slice(6).trim();
    } else if (line.startsWith("data:")) {
      const data = line.slice(5).trim();
      if (this.done !== null && data === this.done) {
        this.finished = true;
        return [];
      }
      if (this.event === "error") throw new StreamError(200, this.requestId, JSON.parse(data));
      return [JSON.parse(data)];
    }
    return [];
  }
}

class ClientBase {
  readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxDelayMs: number;
  private readonly fetcher: typeof fetch;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? env("SERVECTL_URL") ?? DEFAULT_URL).replace(/\/+$/, "");
    const key = options.apiKey ?? env("SERVECTL_API_KEY");
    this.headers = key ? { Authorization: `Bearer ${key}` } : {};
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.fetcher = options.fetch ?? fetch;
  }

  /** Milliseconds before trying again, or null when this answer is final. */
  private retryIn(response: Response, attempt: number, answers: number[]): number | null {
    const status = response.status;
    if (!RETRY_STATUSES.includes(status) || answers.includes(status) || attempt >= this.retries) return null;
    let delay = this.backoffMs * 2 ** attempt;
    const value = response.headers.get("retry-after");
    if (value) {
      const seconds = Number(value);
      delay = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
      if (!Number.isFinite(delay)) delay = this.backoffMs * 2 ** attempt;
    }
    return Math.max(0, Math.min(delay, this.maxDelayMs));
  }

  private send(method: string, path: string, body: unknown, accept?: string): Promise<Response> {
    const headers: Record<string, string> = { ...this.headers };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (accept) headers["Accept"] = accept;
    return this.fetcher(this.baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
  }

  protected async request(method: string, path: string, body?: unknown, answers: number[] = []): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const response = await this.send(method, path, body);
      if (response.status < 300 || answers.includes(response.status)) return response;
      const wait = this.retryIn(response, attempt, answers);
      if (wait === null) throw await apiError(response);
      await response.body?.cancel();
      await sleep(wait);
    }
  }

  /** Parsed chunks as they arrive; a refusal before the stream starts is retried. */
  protected async *stream(
    method: string,
    path: string,
    body: unknown,
    format: "sse" | "ndjson",
    done: string | null,
  ): AsyncGenerator<unknown> {
    const accept = format === "sse" ? "text/event-stream" : "application/x-ndjson";
    let response: Response;
    for (let attempt = 0; ; attempt++) {
      response = await this.send(method, path, body, accept);
      if (response.status < 300) break;
      const wait = this.retryIn(response, attempt, []);
      if (wait === null) throw await apiError(response);
      await response.body?.cancel();
      await sleep(wait);
    }
    if (!response.body) return;
    const events = new Events(format === "sse", done, response.headers.get("x-request-id"));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    try {
      for (;;) {
        const { value, done: ended } = await reader.read();
        buffered += ended ? decoder.decode() : decoder.decode(value, { stream: true });
        const lines = buffered.split("\n");
        buffered = ended ? "" : (lines.pop() ?? "");
        for (const line of lines) {
          yield* events.feed(line.replace(/\r$/, ""));
          if (events.finished) return;
        }
        if (ended) return;
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }
}
