#!/usr/bin/env node
// The shop's transaction domain as a chronik BusinessLogic gRPC service, in Node.js.
//
//     npm ci --prefix examples/shop/node
//     node examples/shop/node/transaction_service.js 50062      (0: any free port)
//
// It behaves exactly like examples/shop/transaction.py run in-process: the same command schemas
// (and the same validation messages), the same events with the same JSON payloads, the same
// rejection reasons. chronik sends each command with the aggregate's prior events (and the latest
// snapshot this service returned, if any); the service folds them into a state and decides.
// Errors: unknown command type NOT_FOUND, bad payload INVALID_ARGUMENT; a rejection is an answer
// (BusinessResponse.rejection), not an error.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', '..', 'proto', 'chronik', 'v1', 'chronik.proto');
const DOMAIN = 'transaction';
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const SNAPSHOT_EVERY = 100; // as transaction.py: chronik.Snapshots(every=100)
const STATE_TYPE = 'transaction.node';
const STATE_VERSION = 1;
const ERROR_KEY = 'chronik-error'; // trailing metadata: the chronik error class name

// --- JSON as msgspec reads it: 1 is an int (exact, a BigInt here), 1.0 and 1e3 are floats ------

class Float {
  constructor(value) {
    this.value = value;
  }
}

class JsonError extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const ESCAPES = {
  0x22: '"',
  0x5c: '\\',
  0x2f: '/',
  0x62: '\b',
  0x66: '\f',
  0x6e: '\n',
  0x72: '\r',
  0x74: '\t',
};

function truncated() {
  return new JsonError('Input data was truncated');
}

function malformed(reason, at) {
  return new JsonError(`JSON is malformed: ${reason} (byte ${at})`);
}

/** The JSON value in `buf`: objects as Maps, ints as BigInts, floats as Float; JsonError if bad. */
function decodeJson(buf) {
  let i = 0;
  const n = buf.length;
  const isDigit = (c) => c >= 0x30 && c <= 0x39;
  const skip = () => {
    while (i < n && WS.has(buf[i])) i += 1;
  };

  function hex4() {
    if (i + 4 > n) throw truncated();
    let code = 0;
    for (let k = 0; k < 4; k += 1) {
      const c = buf[i];
      const lower = c | 0x20; // 'A'-'F' -> 'a'-'f'
      const d = isDigit(c) ? c - 0x30 : lower >= 0x61 && lower <= 0x66 ? lower - 0x57 : -1;
      if (d < 0) throw malformed('invalid character in unicode escape', i + 1);
      code = code * 16 + d;
      i += 1;
    }
    return code;
  }

  function string() {
    i += 1; // the opening quote
    let out = '';
    let start = i;
    let badUtf8 = -1; // reported once the string ends (as msgspec does)
    const flush = (end) => {
      if (end > start) {
        try {
          out += utf8.decode(buf.subarray(start, end));
        } catch {
          if (badUtf8 < 0) badUtf8 = start;
        }
      }
    };
    for (;;) {
      if (i >= n) throw truncated();
      const c = buf[i];
      if (c === 0x22) {
        flush(i);
        if (badUtf8 >= 0) throw malformed('invalid utf-8 in string', badUtf8);
        i += 1;
        return out;
      }
      if (c < 0x20) throw malformed('invalid character', i);
      if (c !== 0x5c) {
        i += 1;
        continue;
      }
      flush(i);
      i += 1;
      if (i >= n) throw truncated();
      const e = buf[i];
      if (e === 0x75) {
        i += 1;
        let code = hex4();
        if (code >= 0xd800 && code <= 0xdbff) {
          if (i + 6 > n) throw truncated();
          if (buf[i] !== 0x5c || buf[i + 1] !== 0x75) {
            throw malformed('invalid utf-16 surrogate pair', i);
          }
          i += 2;
          const low = hex4();
          if (low < 0xdc00 || low > 0xdfff) throw malformed('invalid utf-16 surrogate pair', i);
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        } else if (code >= 0xdc00 && code <= 0xdfff) {
          throw malformed('invalid utf-16 surrogate pair', i);
        }
        out += String.fromCodePoint(code);
      } else if (Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e];
        i += 1;
      } else {
        throw malformed('invalid escape character in string', i + 1);
      }
      start = i;
    }
  }

  function number(path) {
    const start = i;
    let float = false;
    if (buf[i] === 0x2d) i += 1;
    if (i >= n) throw malformed('invalid number', i);
    if (buf[i] === 0x30) {
      i += 1;
      if (i < n && isDigit(buf[i])) throw malformed('invalid number', i);
    } else if (isDigit(buf[i])) {
      while (i < n && isDigit(buf[i])) i += 1;
    } else {
      throw malformed('invalid character', i);
    }
    if (i < n && buf[i] === 0x2e) {
      float = true;
      i += 1;
      if (i >= n || !isDigit(buf[i])) throw malformed('invalid number', i);
      while (i < n && isDigit(buf[i])) i += 1;
    }
    if (i < n && (buf[i] === 0x65 || buf[i] === 0x45)) {
      float = true;
      i += 1;
      if (i < n && (buf[i] === 0x2b || buf[i] === 0x2d)) i += 1;
      if (i >= n || !isDigit(buf[i])) throw malformed('invalid number', i);
      while (i < n && isDigit(buf[i])) i += 1;
    }
    const text = buf.toString('latin1', start, i);
    if (!float) return BigInt(text);
    const value = Number(text);
    if (!Number.isFinite(value)) {
      throw new JsonError(`Number out of range${path ? ` - at \`$${path}\`` : ''}`);
    }
    return new Float(value);
  }

  function literal(word, value) {
    if (i + word.length > n) throw truncated();
    const end = i + word.length;
    if (buf.toString('latin1', i, end) !== word) throw malformed('invalid character', end);
    i = end;
    return value;
  }

  function value(path) {
    skip();
    if (i >= n) throw truncated();
    const c = buf[i];
    if (c === 0x7b) return object(path);
    if (c === 0x5b) return array(path);
    if (c === 0x22) return string();
    if (c === 0x74) return literal('true', true);
    if (c === 0x66) return literal('false', false);
    if (c === 0x6e) return literal('null', null);
    if (c === 0x2d || isDigit(c)) return number(path);
    throw malformed('invalid character', i);
  }

  function object(path) {
    i += 1;
    const out = new Map();
    skip();
    if (i >= n) throw truncated();
    if (buf[i] === 0x7d) {
      i += 1;
      return out;
    }
    for (;;) {
      if (buf[i] !== 0x22) throw malformed('object keys must be strings', i);
      const key = string();
      skip();
      if (i >= n) throw truncated();
      if (buf[i] !== 0x3a) throw malformed("expected ':'", i);
      i += 1;
      out.set(key, value(`${path}[...]`));
      skip();
      if (i >= n) throw truncated();
      if (buf[i] === 0x7d) {
        i += 1;
        return out;
      }
      if (buf[i] !== 0x2c) throw malformed("expected ',' or '}'", i);
      i += 1;
      skip();
      if (i >= n) throw truncated();
      if (buf[i] === 0x7d) throw malformed('trailing comma in object', i);
    }
  }

  function array(path) {
    i += 1;
    const out = [];
    skip();
    if (i >= n) throw truncated();
    if (buf[i] === 0x5d) {
      i += 1;
      return out;
    }
    for (;;) {
      out.push(value(`${path}[${out.length}]`));
      skip();
      if (i >= n) throw truncated();
      if (buf[i] === 0x5d) {
        i += 1;
        return out;
      }
      if (buf[i] !== 0x2c) throw malformed("expected ',' or ']'", i);
      i += 1;
      skip();
      if (i >= n) throw truncated();
      if (buf[i] === 0x5d) throw malformed('trailing comma in array', i);
    }
  }

  const result = value('');
  skip();
  if (i < n) throw malformed('trailing characters', i + 1);
  return result;
}

/** JSON text of a value of Maps, plain objects, arrays, strings, BigInts, numbers, booleans. */
function encodeJson(v) {
  if (v === null) return 'null';
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Float) return JSON.stringify(v.value);
  if (typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(encodeJson).join(',')}]`;
  const entries = v instanceof Map ? [...v] : Object.entries(v);
  return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${encodeJson(x)}`).join(',')}}`;
}

/** msgspec's name for the JSON type of a value. */
function typeName(v) {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'bigint') return 'int';
  if (v instanceof Float) return 'float';
  if (typeof v === 'string') return 'str';
  if (Array.isArray(v)) return 'array';
  return 'object';
}

// --- the command schemas (examples/shop/events.py), with msgspec's messages -----------------

const checkStr = (v) => (typeof v === 'string' ? null : `Expected \`str\`, got \`${typeName(v)}\``);

const checkInt = (min) => (v) => {
  if (typeof v !== 'bigint') return `Expected \`int\`, got \`${typeName(v)}\``;
  return v < BigInt(min) ? `Expected \`int\` >= ${min}` : null;
};

// Item: sku str, price_cents int >= 0, qty int >= 1 (unknown keys ignored, as msgspec does).
const ITEM_FIELDS = new Map([
  ['sku', checkStr],
  ['price_cents', checkInt(0)],
  ['qty', checkInt(1)],
]);

function checkItems(v) {
  if (!Array.isArray(v)) return `Expected \`array\`, got \`${typeName(v)}\``;
  for (let k = 0; k < v.length; k += 1) {
    const item = v[k];
    if (!(item instanceof Map)) {
      return `Expected \`object\`, got \`${typeName(item)}\` - at \`$[${k}]\``;
    }
    for (const [key, x] of item) {
      const check = ITEM_FIELDS.get(key);
      const problem = check ? check(x) : null;
      if (problem) return `${problem} - at \`$[${k}].${key}\``;
    }
    for (const key of ITEM_FIELDS.keys()) {
      if (!item.has(key)) return `Object missing required field \`${key}\` - at \`$[${k}]\``;
    }
  }
  return null;
}

/** An item as the event stores it: the schema's fields, in the schema's order. */
const toItem = (m) => ({ sku: m.get('sku'), price_cents: m.get('price_cents'), qty: m.get('qty') });

const COMMANDS = {
  CreateTransaction: {
    fields: new Map([
      ['customer_id', checkStr],
      ['items', checkItems],
    ]),
    convert: (p) => ({ customer_id: p.get('customer_id'), items: p.get('items').map(toItem) }),
  },
  CompleteTransaction: { fields: new Map(), convert: () => ({}) },
};

class InvalidCommand extends Error {
  constructor(commandType, problems) {
    const listed = [...problems.keys()]
      .sort()
      .map((k) => `${k}: ${problems.get(k)}`)
      .join('; ');
    super(`invalid ${commandType} payload: ${listed}`);
    this.name = 'InvalidCommand';
  }
}

class UnknownCommandType extends Error {
  constructor(commandType) {
    const known = Object.keys(COMMANDS).sort().join(', ');
    super(`domain '${DOMAIN}' has no command '${commandType}' (known: ${known})`);
    this.name = 'UnknownCommandType';
  }
}

/** The payload checked against its command's schema (chronik's CommandSpec.parse). */
function parseCommand(type, payload) {
  if (!Object.hasOwn(COMMANDS, type)) throw new UnknownCommandType(type);
  const spec = COMMANDS[type];
  let data;
  try {
    data = decodeJson(payload.length ? payload : Buffer.from('{}'));
  } catch (exc) {
    if (!(exc instanceof JsonError)) throw exc;
    throw new InvalidCommand(type, new Map([['payload', `not valid JSON: ${exc.message}`]]));
  }
  if (!(data instanceof Map)) {
    throw new InvalidCommand(type, new Map([['payload', 'expected a JSON object']]));
  }
  const problems = new Map();
  for (const [name, check] of spec.fields) {
    if (!data.has(name)) problems.set(name, 'required');
    else {
      const problem = check(data.get(name));
      if (problem) problems.set(name, problem);
    }
  }
  for (const key of data.keys()) {
    if (!spec.fields.has(key)) problems.set(key, 'unknown field');
  }
  if (problems.size) throw new InvalidCommand(type, problems);
  return spec.convert(data);
}

// --- the aggregate (examples/shop/transaction.py) --------------------------------------------

class Rejected extends Error {}

function require_(condition, reason) {
  if (!condition) throw new Rejected(reason);
}

const initial = () => ({ customer_id: '', items: [], completed: false });

/** The state after one stored event (other event types leave it as it is). */
function evolve(state, type, payload) {
  if (type === 'TransactionCreated') {
    const data = decodeJson(payload);
    return { ...state, customer_id: data.get('customer_id'), items: data.get('items').map(toItem) };
  }
  if (type === 'TransactionCompleted') return { ...state, completed: true };
  return state;
}

/** The events a command produces: [[type, payload object], ...]; throws Rejected. */
function decide(type, cmd, state) {
  if (type === 'CreateTransaction') {
    require_(!state.customer_id, 'Transaction already exists');
    return [['TransactionCreated', { customer_id: cmd.customer_id, items: cmd.items }]];
  }
  require_(state.customer_id, 'Transaction does not exist');
  require_(!state.completed, 'Transaction is already completed');
  require_(state.items.length, 'Transaction is empty');
  const amount = state.items.reduce((sum, item) => sum + item.price_cents * item.qty, 0n);
  return [['TransactionCompleted', { customer_id: state.customer_id, amount_cents: amount }]];
}

function encodeState(state) {
  return Buffer.from(encodeJson(state));
}

function decodeState(bytes) {
  const data = decodeJson(bytes);
  return {
    customer_id: data.get('customer_id'),
    items: data.get('items').map(toItem),
    completed: data.get('completed'),
  };
}

// --- the gRPC service ------------------------------------------------------------------------

/** BusinessLogic.Handle: ContextualCommand -> BusinessResponse. */
function handle(request) {
  const command = request.command || {};
  const cmd = parseCommand(command.type, command.payload || Buffer.alloc(0));
  let state = initial();
  let base = -1n;
  const snap = request.snapshot;
  if (snap && snap.type === STATE_TYPE && snap.schema_version === STATE_VERSION) {
    state = decodeState(snap.state);
    base = BigInt(snap.sequence);
  }
  for (const event of request.events || []) state = evolve(state, event.type, event.payload);
  let decided;
  try {
    decided = decide(command.type, cmd, state);
  } catch (exc) {
    if (exc instanceof Rejected) return { rejection: exc.message };
    throw exc;
  }
  const response = {
    events: decided.map(([type, payload]) => ({
      type,
      payload: Buffer.from(encodeJson(payload)),
      schema_version: 1,
    })),
  };
  const version = BigInt(request.version) + BigInt(decided.length);
  if (decided.length && version - base >= BigInt(SNAPSHOT_EVERY)) {
    for (const [type, payload] of decided) {
      state = evolve(state, type, Buffer.from(encodeJson(payload)));
    }
    response.snapshot = {
      sequence: version.toString(),
      type: STATE_TYPE,
      schema_version: STATE_VERSION,
      state: encodeState(state),
    };
  }
  return response;
}

function statusFor(exc) {
  if (exc instanceof InvalidCommand) return grpc.status.INVALID_ARGUMENT;
  if (exc instanceof UnknownCommandType) return grpc.status.NOT_FOUND;
  return grpc.status.INTERNAL;
}

function serve(host, port) {
  const definition = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: String,
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).chronik.v1;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  server.addService(pkg.BusinessLogic.service, {
    Handle(call, callback) {
      let response;
      try {
        response = handle(call.request);
      } catch (exc) {
        const code = statusFor(exc);
        if (code === grpc.status.INTERNAL) console.error('business logic failed:', exc);
        const metadata = new grpc.Metadata();
        if (code !== grpc.status.INTERNAL) metadata.set(ERROR_KEY, exc.name);
        const details = code === grpc.status.INTERNAL ? String(exc) : exc.message;
        callback({ code, details, metadata });
        return;
      }
      callback(null, response);
    },
  });
  server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err) {
      console.error(`cannot listen on ${host}:${port}: ${err.message}`);
      process.exit(1);
    }
    console.log(`transaction business logic on ${host}:${bound}`);
  });
  const stop = () => {
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(force);
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) {
  const port = process.argv[2] ?? '50062';
  const host = process.argv[3] ?? '127.0.0.1';
  if (!/^\d+$/.test(port) || Number(port) > 65535) {
    console.error('usage: node transaction_service.js PORT [HOST]   (PORT 0: any free port)');
    process.exit(2);
  }
  serve(host, Number(port));
}

module.exports = { decodeJson, encodeJson, parseCommand, handle };
