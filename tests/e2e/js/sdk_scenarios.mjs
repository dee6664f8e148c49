// What a JavaScript user does with the official `openai` SDK, pointed at the gateway's /v1.
//
//   node sdk_scenarios.mjs '{"scenario": "chat", "baseURL": "http://127.0.0.1:PORT/v1", "apiKey": "sk-gw-...", ...}'
//
// Prints one JSON object (what the SDK returned, as plain data) on stdout for tests/e2e/test_sdk_js.py to
// assert on; this script checks nothing itself. Expected API errors are reported, not thrown, so the test
// sees the SDK's error class, status, body and headers. Anything unexpected exits non-zero with the stack.
import OpenAI, { toFile } from "openai";

const config = JSON.parse(process.argv[2]);
// No SDK retries: a 429 must reach the test as the first and only answer.
const client = new OpenAI({ baseURL: config.baseURL, apiKey: config.apiKey, maxRetries: 0, timeout: 20_000 });
const user = (content) => [{ role: "user", content }];
const GATEWAY_HEADERS = ["x-request-id", "x-gateway-cost", "x-gateway-deployment", "x-gateway-overhead-ms"];

function pick(headers, names = GATEWAY_HEADERS) {
  return Object.fromEntries(names.map((name) => [name, headers.get(name)]));
}

const ERROR_CLASSES = [
  "AuthenticationError",
  "PermissionDeniedError",
  "NotFoundError",
  "RateLimitError",
  "BadRequestError",
  "InternalServerError",
];

// An SDK error as data; `instanceOf` lists the SDK classes it is an instance of (checked, not just named).
function describeError(error) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  return {
    className: error.constructor.name,
    instanceOf: ERROR_CLASSES.filter((name) => error instanceof OpenAI[name]),
    status: error.status,
    code: error.code ?? null,
    type: error.type ?? null,
    param: error.param ?? null,
    message: error.message,
    error: error.error ?? null,
    requestID: error.requestID ?? null,
    headers: error.headers ? Object.fromEntries(error.headers.entries()) : null,
  };
}

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (error) {
    return { error: describeError(error) };
  }
}

const scenarios = {
  // Non-streaming chat, with the raw HTTP response alongside the parsed body.
  async chat() {
    const { data, response, request_id } = await client.chat.completions
      .create({ model: config.model, messages: user(config.prompt) })
      .withResponse();
    const raw = await client.chat.completions.create({ model: config.model, messages: user("raw") }).asResponse();
    return {
      id: data.id,
      object: data.object,
      model: data.model,
      content: data.choices[0].message.content,
      role: data.choices[0].message.role,
      finishReason: data.choices[0].finish_reason,
      usage: data.usage,
      status: response.status,
      requestId: request_id,
      dataRequestId: data._request_id,
      headers: pick(response.headers),
      contentType: response.headers.get("content-type"),
      asResponse: { status: raw.status, headers: pick(raw.headers), body: await raw.json() },
    };
  },

  // stream: true with include_usage, read chunk by chunk; then the SDK's accumulating .stream() helper.
  async stream() {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: config.model,
        messages: user(config.prompt),
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const helper = client.chat.completions.stream({
      model: config.model,
      messages: user(config.prompt),
      stream_options: { include_usage: true },
    });
    const deltas = [];
    helper.on("content", (delta) => deltas.push(delta));
    const final = await helper.finalChatCompletion();
    return {
      contentType: response.headers.get("content-type"),
      headers: pick(response.headers),
      objects: [...new Set(chunks.map((c) => c.object))],
      ids: [...new Set(chunks.map((c) => c.id))],
      text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
      finishReasons: chunks.map((c) => c.choices[0]?.finish_reason ?? null).filter(Boolean),
      usageChunks: chunks.filter((c) => c.usage).length,
      last: { choices: chunks.at(-1).choices, usage: chunks.at(-1).usage },
      helper: {
        deltas: deltas.join(""),
        content: final.choices[0].message.content,
        finishReason: final.choices[0].finish_reason,
        usage: final.usage ?? null,
      },
    };
  },

  // Function calling, plain and streamed (the helper assembles tool-call deltas), then the tool result turn.
  async tools() {
    const tools = config.tools;
    const completion = await client.chat.completions.create({
      model: config.model,
      messages: user("weather in Paris?"),
      tools,
      tool_choice: "auto",
    });
    const message = completion.choices[0].message;
    const streamed = await client.chat.completions
      .stream({ model: config.model, messages: user("weather in Paris?"), tools })
      .finalChatCompletion();
    const answer = await client.chat.completions.create({
      model: config.model,
      tools,
      messages: [
        ...user("weather in Paris?"),
        message,
        { role: "tool", tool_call_id: message.tool_calls[0].id, content: '{"celsius": 21}' },
      ],
    });
    return {
      finishReason: completion.choices[0].finish_reason,
      toolCalls: message.tool_calls,
      streamed: {
        finishReason: streamed.choices[0].finish_reason,
        toolCalls: streamed.choices[0].message.tool_calls,
      },
      afterTool: { content: answer.choices[0].message.content, finishReason: answer.choices[0].finish_reason },
    };
  },

  // The SDK asks for base64 unless told otherwise and decodes it into float32 values itself.
  async embeddings() {
    const results = {};
    for (const [label, extra] of Object.entries(config.variants)) {
      const result = await client.embeddings.create({ model: config.model, input: config.input, ...extra });
      results[label] = {
        object: result.object,
        data: result.data.map((d) => ({ index: d.index, object: d.object, embedding: d.embedding })),
        usage: result.usage,
      };
    }
    return results;
  },

  // Chat on a provider whose answer the gateway translates (its own chunk builder): every SDK reading path.
  async translated() {
    const model = config.model;
    const plain = await client.chat.completions.create({ model, messages: user("hi") });
    const chunks = [];
    const stream = await client.chat.completions.create({
      model,
      messages: user("hi"),
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) chunks.push(chunk);
    const helper = await client.chat.completions
      .stream({ model, messages: user("hi"), stream_options: { include_usage: true } })
      .finalChatCompletion();
    const withTools = config.tools
      ? await client.chat.completions
          .stream({ model, messages: user("weather?"), tools: config.tools, tool_choice: "required" })
          .finalChatCompletion()
      : null;
    return {
      plain: {
        content: plain.choices[0].message.content,
        finishReason: plain.choices[0].finish_reason,
        usage: plain.usage,
      },
      stream: {
        objects: [...new Set(chunks.map((c) => c.object))],
        ids: [...new Set(chunks.map((c) => c.id))].length,
        text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
        finishReasons: chunks.map((c) => c.choices[0]?.finish_reason ?? null).filter(Boolean),
        last: { choices: chunks.at(-1).choices, usage: chunks.at(-1).usage },
      },
      helper: { content: helper.choices[0].message.content, usage: helper.usage ?? null },
      tools: withTools && {
        finishReason: withTools.choices[0].finish_reason,
        calls: (withTools.choices[0].message.tool_calls ?? []).map((c) => ({
          name: c.function.name,
          arguments: JSON.parse(c.function.arguments),
          hasId: Boolean(c.id),
        })),
      },
    };
  },

  // The other OpenAI routes, including multipart uploads built by the SDK's own FormData encoder.
  async endpoints() {
    const model = config.model;
    const completion = await client.completions.create({ model, prompt: "say" });
    const response = await client.responses.create({ model, input: "hi" });
    const events = [];
    for await (const event of await client.responses.create({ model, input: "hi", stream: true })) events.push(event);
    const moderation = await client.moderations.create({ model, input: "fine text" });
    const images = await client.images.generate({ model, prompt: "a cat", n: 2 });
    const speech = await client.audio.speech.create({ model, voice: "alloy", input: "hello" });
    const transcript = await client.audio.transcriptions.create({
      model,
      file: await toFile(Buffer.from("RIFF0000WAVE"), "a.wav", { type: "audio/wav" }),
    });
    const reranked = await client.post("/rerank", { body: { model, query: "q", documents: ["x", "y"] } });
    return {
      completion: completion.choices[0].text,
      responseText: response.output_text,
      responseEvents: events.map((e) => e.type),
      responseDeltas: events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
      moderationFlagged: moderation.results[0].flagged,
      images: images.data.length,
      speech: {
        contentType: speech.headers.get("content-type"),
        text: Buffer.from(await speech.arrayBuffer()).toString(),
      },
      transcript: transcript.text,
      rerank: reranked.results.map((r) => r.index),
    };
  },

  // Files and batches on the built-in mock provider: upload (multipart), read back, batch, cancel.
  async batches() {
    const line = JSON.stringify(config.line);
    const file = await client.files.create({ file: await toFile(Buffer.from(line), "b.jsonl"), purpose: "batch" });
    const retrieved = await client.files.retrieve(file.id);
    const content = await (await client.files.content(file.id)).text();
    const batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
    });
    const fetched = await client.batches.retrieve(batch.id);
    const cancelled = await client.batches.cancel(batch.id);
    const bad = await outcome(
      client.files.create({ file: await toFile(Buffer.from("not json"), "bad.jsonl"), purpose: "batch" }),
    );
    return {
      fileId: file.id,
      bytes: retrieved.bytes,
      content,
      batchId: batch.id,
      status: fetched.status,
      cancelled: cancelled.status,
      bad: bad.error ?? null,
    };
  },

  // models.list() pages with `for await`; retrieve() and an unknown id.
  async models() {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    const retrieved = await client.models.retrieve(config.model);
    const missing = await outcome(client.models.retrieve(config.missing));
    return { ids, retrieved, missing: missing.error ?? null };
  },

  // Each call in `calls` as the SDK reports it: a value or a typed error.
  async errors() {
    const results = [];
    for (const call of config.calls) {
      const caller = new OpenAI({ baseURL: config.baseURL, apiKey: call.apiKey, maxRetries: 0, timeout: 20_000 });
      const result = await outcome(
        call.stream
          ? caller.chat.completions
              .create({ model: call.model, messages: user("x"), stream: true })
              .then(async (stream) => {
                let text = "";
                try {
                  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
                } catch (error) {
                  return { text, streamError: describeError(error) }; // after the response began
                }
                return { text };
              })
          : caller.chat.completions
              .create({ model: call.model, messages: user("x") })
              .then((c) => ({ content: c.choices[0].message.content })),
      );
      results.push({ label: call.label, ...result });
    }
    return results;
  },
};

const run = scenarios[config.scenario];
if (!run) throw new Error(`unknown scenario ${config.scenario}`);
process.stdout.write(JSON.stringify(await run()) + "\n");
