//! The strict AWS layer: an HTTP proxy in front of the DynamoDB emulator
//! (moto) that enforces what AWS does and moto does not, answering
//! violations on the wire as AWS does (HTTP 400 and AWS's JSON error body),
//! so the real SDK and our adapter classify them as they would on AWS.
//!
//! - `ClientRequestToken` of `TransactWriteItems` ([`tokens`]).
//! - Item, expression, transaction and batch limits ([`rules`]).
//! - `TransactionConflict`: the item keys of every transaction in flight
//!   (from its arrival until moto answered) are held; a transaction touching
//!   a held key is cancelled with `TransactionConflict` for that action, a
//!   single-item write is refused with `TransactionConflictException`, and
//!   neither reaches moto. Requests reach moto one at a time (moto's
//!   transactions are not atomic against each other), while clients run
//!   concurrently.
//!
//! To make overlap certain rather than likely, [`StrictProxy::hold_transactions`]
//! holds the next transactions in flight until another request meets one of
//! their keys (or a generous timeout passes, so nothing can deadlock).
//!
//! One request per connection (`Connection: close`), one thread each.
//! What each rule is, and its AWS source: `docs/strict-aws-layer.md`.

pub mod rules;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Map, Value};

use rules::Violation;
use tokens::{Clock, Decision, SystemClock, TokenTable};

/// The error type prefix of DynamoDB's JSON protocol.
const ERROR_PREFIX: &str = "com.amazonaws.dynamodb.v20120810#";
/// The target prefix of DynamoDB operations.
const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// One request at a time to the emulator, over every layer of the test
/// process: tests on other tables share the one moto server.
static EMULATOR: Mutex<()> = Mutex::new(());
/// The longest a held transaction waits for another to meet it.
const HOLD_TIMEOUT: Duration = Duration::from_secs(20);

/// What the layer did, for tests to assert on.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Requests sent to the emulator, per operation.
    pub forwarded: HashMap<String, u64>,
    /// Requests answered with a transaction conflict (cancellation reason
    /// or `TransactionConflictException`): proof that requests overlapped.
    pub conflicts: u64,
    /// Held transactions that another request met before their timeout.
    pub overlaps: u64,
    /// Transactions answered from the token table without being applied.
    pub replays: u64,
    /// `IdempotentParameterMismatchException` answers.
    pub mismatches: u64,
    /// `TransactionInProgressException` answers.
    pub in_progress: u64,
    /// `ValidationException` answers and `ValidationError` cancellations.
    pub violations: u64,
}

/// Item keys held by transactions in flight.
#[derive(Default)]
struct Held {
    /// Key → the transaction holding it.
    keys: HashMap<String, u64>,
    next_id: u64,
    /// Transactions still to hold until met.
    holds_left: usize,
    /// Held transactions another request has met.
    met: HashSet<u64>,
    /// Single-item writes still to refuse as if a transaction held their
    /// item: a part of the item's key, and how many more.
    forced: Vec<(String, usize)>,
}

struct Shared {
    upstream: String,
    tokens: Mutex<TokenTable>,
    held: Mutex<Held>,
    released: Condvar,
    /// Table → its key attribute names (from `DescribeTable`).
    key_names: Mutex<HashMap<String, Vec<String>>>,
    stats: Mutex<Stats>,
}

/// Locks a mutex, going on after a panicking holder: the layer's state is
/// plain data, valid between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A strict AWS layer listening on a loopback port.
#[derive(Clone)]
pub struct StrictProxy {
    /// Where clients send their DynamoDB requests (`http://127.0.0.1:<port>`).
    pub url: String,
    shared: Arc<Shared>,
}

impl StrictProxy {
    /// A layer in front of the emulator at `upstream`, on the system clock.
    pub fn start(upstream: &str) -> Self {
        Self::start_with_clock(upstream, Arc::new(SystemClock))
    }

    /// A layer whose token window runs on `clock`.
    pub fn start_with_clock(upstream: &str, clock: Arc<dyn Clock>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the strict layer");
        let url = format!("http://{}", listener.local_addr().expect("strict layer address"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            tokens: Mutex::new(TokenTable::new(clock)),
            held: Mutex::new(Held::default()),
            released: Condvar::new(),
            key_names: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
        });
        let accepting = shared.clone();
        // The accept loop lives as long as the test process; each connection
        // is one request, so every thread ends after its answer.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = accepting.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(client, &shared) {
                        eprintln!("strict layer: {e}");
                    }
                });
            }
        });
        StrictProxy { url, shared }
    }

    /// Holds each of the next `n` transactions, once its keys are held,
    /// until another request meets one of them (or 20 s pass): the
    /// overlap a race test needs happens for certain.
    pub fn hold_transactions(&self, n: usize) {
        lock(&self.shared.held).holds_left = n;
    }

    /// Answers the next `n` single-item writes (`PutItem`, `UpdateItem`,
    /// `DeleteItem`) to an item whose key contains `key_part` with
    /// `TransactionConflictException`, as AWS answers a write to an item a
    /// transaction holds: the conflict at a chosen write, which racing
    /// clients would give only by chance.
    pub fn conflict_single_writes(&self, key_part: &str, n: usize) {
        lock(&self.shared.held).forced.push((key_part.to_owned(), n));
    }

    /// Transactions holding item keys now.
    pub fn transactions_in_flight(&self) -> usize {
        let held = lock(&self.shared.held);
        held.keys.values().collect::<HashSet<_>>().len()
    }

    /// What the layer did so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// A DynamoDB client of `sdk` that talks through this layer.
    pub fn dynamodb_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        // Set on the client: the SDK prefers AWS_ENDPOINT_URL from the
        // environment to the shared config's endpoint.
        let config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(&self.url)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

/// One HTTP request as received.
struct Request {
    /// Header lines, `Connection` left out.
    headers: Vec<String>,
    target: String,
    body: Vec<u8>,
}

fn read_request(client: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut headers = Vec::new();
    let mut target = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None); // closed before a request
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
            continue; // set again for every forwarded body
        }
        if lower.starts_with("x-amz-target:") {
            target = line["x-amz-target:".len()..].trim().to_owned();
        }
        if !lower.starts_with("connection:") {
            headers.push(line);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request { headers, target, body }))
}

/// An answer from the emulator.
struct Answer {
    status: u16,
    /// The whole HTTP response, as sent back to the client.
    raw: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        let split = self.raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        serde_json::from_slice(&self.raw[split + 4..]).ok()
    }
}

impl Shared {
    /// Sends `body` to the emulator as operation `target`, with the
    /// client's other headers (moto reads the region from its signature).
    fn call(&self, request: &Request, target: &str, body: &[u8]) -> std::io::Result<Answer> {
        let mut head = String::new();
        for line in &request.headers {
            if line.to_ascii_lowercase().starts_with("x-amz-target:") {
                head.push_str(&format!("X-Amz-Target: {target}\r\n"));
            } else {
                head.push_str(line);
            }
        }
        let mut server = TcpStream::connect(&self.upstream)?;
        server.write_all(head.as_bytes())?;
        server.write_all(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())?;
        server.write_all(body)?;
        // The emulator closes after its answer (`Connection: close`).
        let mut raw = Vec::new();
        server.read_to_end(&mut raw)?;
        let status = std::str::from_utf8(&raw[..raw.len().min(12)])
            .ok()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        *lock(&self.stats).forwarded.entry(target.to_owned()).or_default() += 1;
        Ok(Answer { status, raw })
    }

    /// The key attribute names of `table`, asked of the emulator once.
    fn key_names(&self, request: &Request, table: &str) -> Vec<String> {
        if let Some(names) = lock(&self.key_names).get(table) {
            return names.clone();
        }
        let body = json!({ "TableName": table }).to_string();
        let names: Vec<String> = self
            .call(request, "DynamoDB_20120810.DescribeTable", body.as_bytes())
            .ok()
            .and_then(|answer| answer.json())
            .and_then(|v| v.pointer("/Table/KeySchema").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.get("AttributeName").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if !names.is_empty() {
            lock(&self.key_names).insert(table.to_owned(), names.clone());
        }
        names
    }

    /// The current item under `key`, as the emulator holds it.
    fn current_item(&self, request: &Request, table: &str, key: &Value) -> Option<Map<String, Value>> {
        let body = json!({ "TableName": table, "Key": key, "ConsistentRead": true }).to_string();
        let answer = self.call(request, "DynamoDB_20120810.GetItem", body.as_bytes()).ok()?;
        answer.json()?.get("Item")?.as_object().cloned()
    }

    /// The item key an action or request writes: `Key`, or the key
    /// attributes of its `Item`. As text: table and canonical key JSON.
    fn item_key(&self, request: &Request, action: &Map<String, Value>) -> Option<String> {
        let table = action.get("TableName")?.as_str()?;
        let key = match (action.get("Key"), action.get("Item").and_then(Value::as_object)) {
            (Some(key), _) => key.clone(),
            (None, Some(item)) => {
                let names = self.key_names(request, table);
                Value::Object(
                    names
                        .iter()
                        .filter_map(|n| item.get(n).map(|v| (n.clone(), v.clone())))
                        .collect(),
                )
            }
            (None, None) => return None,
        };
        Some(format!("{table}\n{}", rules::canonical(&key)))
    }

    /// The largest item an update could leave: the current item plus every
    /// substitution value and name (an upper bound: `SET` may replace).
    fn updated_item_bytes(&self, request: &Request, update: &Map<String, Value>) -> usize {
        let (Some(table), Some(key)) = (update.get("TableName").and_then(Value::as_str), update.get("Key")) else {
            return 0;
        };
        let current = self
            .current_item(request, table, key)
            .map_or(0, |item| rules::item_bytes(&item));
        let values = update
            .get("ExpressionAttributeValues")
            .and_then(Value::as_object)
            .map_or(0, |values| values.values().map(rules::value_bytes).sum());
        current + values
    }

    fn count(&self, what: impl FnOnce(&mut Stats)) {
        what(&mut lock(&self.stats));
    }
}

/// An AWS error answer: HTTP 400 and the JSON body AWS sends.
fn error(kind: &str, message: &str, extra: Option<(&str, Value)>) -> Vec<u8> {
    let mut body = json!({ "__type": format!("{ERROR_PREFIX}{kind}"), "message": message });
    if let Some((field, value)) = extra {
        body[field] = value;
        // TransactionCanceledException carries `Message`, as AWS sends it.
        body["Message"] = json!(message);
    }
    let body = body.to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: strict-layer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn validation(violation: &Violation) -> Vec<u8> {
    error("ValidationException", &violation.message(), None)
}

/// `TransactionCanceledException` with one reason per action: `code` (and
/// its message) where `failed`, `None` elsewhere.
fn cancelled(failed: &[bool], code: &str, message: &str) -> Vec<u8> {
    let reasons: Vec<Value> = failed
        .iter()
        .map(|f| {
            if *f {
                json!({ "Code": code, "Message": message })
            } else {
                json!({ "Code": "None" })
            }
        })
        .collect();
    let codes: Vec<&str> = failed.iter().map(|f| if *f { code } else { "None" }).collect();
    error(
        "TransactionCanceledException",
        &format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        Some(("CancellationReasons", Value::Array(reasons))),
    )
}

/// AWS's message for an item another transaction holds.
const CONFLICT_MESSAGE: &str = "Transaction is ongoing for the item";

fn serve(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(request) = read_request(&client)? else {
        return Ok(());
    };
    let answer = answer(shared, &request)?;
    client.write_all(&answer)
}

fn answer(shared: &Shared, request: &Request) -> std::io::Result<Vec<u8>> {
    let operation = request.target.strip_prefix(TARGET_PREFIX).unwrap_or("");
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&request.body).ok();
    let (Some(body), false) = (parsed, operation.is_empty()) else {
        let _one = lock(&EMULATOR);
        return Ok(shared.call(request, &request.target, &request.body)?.raw);
    };
    match operation {
        "TransactWriteItems" => transact(shared, request, &body),
        "PutItem" | "UpdateItem" | "DeleteItem" => single_write(shared, request, operation, &body),
        "BatchWriteItem" => {
            if let Err(v) = rules::check_batch_write(&body) {
                shared.count(|s| s.violations += 1);
                return Ok(validation(&v));
            }
            let _one = lock(&EMULATOR);
            Ok(shared.call(request, &request.target, &request.body)?.raw)
        }
        _ => {
            if let Err(v) = rules::check_expressions(&body) {
                shared.count(|s| s.violations += 1);
                return Ok(validation(&v));
            }
            let _one = lock(&EMULATOR);
            Ok(shared.call(request, &request.target, &request.body)?.raw)
        }
    }
}

fn single_write(
    shared: &Shared,
    request: &Request,
    operation: &str,
    body: &Map<String, Value>,
) -> std::io::Result<Vec<u8>> {
    let mut check = rules::check_expressions(body);
    if let (Ok(()), Some(item)) = (&check, body.get("Item").and_then(Value::as_object)) {
        check = rules::check_item(item);
    }
    if let Err(v) = check {
        shared.count(|s| s.violations += 1);
        return Ok(validation(&v));
    }
    if let Some(key) = shared.item_key(request, body) {
        let mut held = lock(&shared.held);
        if let Some((_, left)) = held
            .forced
            .iter_mut()
            .find(|(part, left)| *left > 0 && key.contains(part.as_str()))
        {
            *left -= 1;
            drop(held);
            shared.count(|s| s.conflicts += 1);
            return Ok(error("TransactionConflictException", CONFLICT_MESSAGE, None));
        }
        if let Some(holder) = held.keys.get(&key).copied() {
            held.met.insert(holder);
            shared.released.notify_all();
            drop(held);
            shared.count(|s| s.conflicts += 1);
            return Ok(error("TransactionConflictException", CONFLICT_MESSAGE, None));
        }
    }
    let _one = lock(&EMULATOR);
    if operation == "UpdateItem" {
        let bytes = shared.updated_item_bytes(request, body);
        if bytes > rules::MAX_ITEM_BYTES {
            shared.count(|s| s.violations += 1);
            return Ok(validation(&Violation::ItemTooLarge { bytes }));
        }
    }
    Ok(shared.call(request, &request.target, &request.body)?.raw)
}

fn transact(shared: &Shared, request: &Request, body: &Map<String, Value>) -> std::io::Result<Vec<u8>> {
    if let Err(v) = rules::check_transaction(body) {
        shared.count(|s| s.violations += 1);
        return Ok(validation(&v));
    }
    let token = body
        .get("ClientRequestToken")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(token) = &token {
        match lock(&shared.tokens).begin(token, rules::digest(&Value::Object(body.clone()))) {
            Decision::Forward => {}
            Decision::Replay(answer) => {
                shared.count(|s| s.replays += 1);
                return Ok(answer);
            }
            Decision::Mismatch => {
                shared.count(|s| s.mismatches += 1);
                return Ok(error(
                    "IdempotentParameterMismatchException",
                    "Request parameters do not match the original request for this client request token",
                    None,
                ));
            }
            Decision::InProgress => {
                shared.count(|s| s.in_progress += 1);
                return Ok(error(
                    "TransactionInProgressException",
                    "The transaction with the given request token is already in progress",
                    None,
                ));
            }
        }
    }
    let (answer, committed) = transact_once(shared, request, body)?;
    if let Some(token) = &token {
        lock(&shared.tokens).complete(token, committed, answer.clone());
    }
    Ok(answer)
}

/// A transaction whose token (if any) is new: conflicts, item sizes, then
/// the emulator. Returns the answer and whether it committed.
fn transact_once(shared: &Shared, request: &Request, body: &Map<String, Value>) -> std::io::Result<(Vec<u8>, bool)> {
    let actions: Vec<(&str, &Map<String, Value>)> = body
        .get("TransactItems")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(rules::transact_action).collect())
        .unwrap_or_default();
    let keys: Vec<Option<String>> = actions.iter().map(|(_, a)| shared.item_key(request, a)).collect();

    // Hold every key, or meet the transactions holding some.
    let id = {
        let mut held = lock(&shared.held);
        let holders: Vec<Option<u64>> = keys
            .iter()
            .map(|k| k.as_ref().and_then(|k| held.keys.get(k).copied()))
            .collect();
        if holders.iter().any(Option::is_some) {
            for holder in holders.iter().flatten() {
                held.met.insert(*holder);
            }
            shared.released.notify_all();
            drop(held);
            shared.count(|s| s.conflicts += 1);
            let failed: Vec<bool> = holders.iter().map(Option::is_some).collect();
            return Ok((cancelled(&failed, "TransactionConflict", CONFLICT_MESSAGE), false));
        }
        held.next_id += 1;
        let id = held.next_id;
        for key in keys.iter().flatten() {
            held.keys.insert(key.clone(), id);
        }
        if held.holds_left > 0 {
            held.holds_left -= 1;
            let (held, _) = shared
                .released
                .wait_timeout_while(held, HOLD_TIMEOUT, |h| !h.met.contains(&id))
                .unwrap_or_else(|e| e.into_inner());
            if held.met.contains(&id) {
                drop(held);
                shared.count(|s| s.overlaps += 1);
            }
        }
        id
    };

    let outcome = (|| {
        let _one = lock(&EMULATOR);
        // Items an action would make too large cancel the transaction
        // (AWS: a `ValidationError` cancellation reason).
        let too_large: Vec<bool> = actions
            .iter()
            .map(|(kind, action)| match *kind {
                "Put" => action
                    .get("Item")
                    .and_then(Value::as_object)
                    .is_some_and(|item| rules::check_item(item).is_err()),
                "Update" => shared.updated_item_bytes(request, action) > rules::MAX_ITEM_BYTES,
                _ => false,
            })
            .collect();
        if too_large.iter().any(|t| *t) {
            shared.count(|s| s.violations += 1);
            return Ok((
                cancelled(
                    &too_large,
                    "ValidationError",
                    "Item size has exceeded the maximum allowed size",
                ),
                false,
            ));
        }
        let answer = shared.call(request, &request.target, &request.body)?;
        Ok((answer.raw, answer.status == 200))
    })();

    let mut held = lock(&shared.held);
    held.keys.retain(|_, holder| *holder != id);
    held.met.remove(&id);
    outcome
}
