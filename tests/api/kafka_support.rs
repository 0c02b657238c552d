//! A real Kafka-protocol broker (tansu) for the Kafka tests, and a consumer that reads back
//! what the bridge published.
//!
//! tansu is found through `STOCKROOM_TANSU`, then `~/.cache/stockroom-tools/bin/tansu`, then
//! `PATH`; `scripts/test` installs it there when it is missing. Its storage is in memory, so
//! a restarted broker starts empty (the tests account for that).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use stockroom::domain::EventRecord;
use stockroom::persistence::log::read_events;
use stockroom::persistence::Log;

/// Partitions of each topic in the tests (more than one, so keys spread).
pub const PARTITIONS: i32 = 3;

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STOCKROOM_TANSU") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/stockroom-tools/bin/tansu");
        if cached.exists() {
            return cached;
        }
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the tansu broker: run scripts/test (it installs it), or \
             `cargo install tansu --version 0.6.0 --locked --features dynostore`, or set STOCKROOM_TANSU"
        )
    })
}

/// A tansu broker on 127.0.0.1.
pub struct Broker {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// With a directory, the broker keeps its data there (tansu's SQLite engine) across
    /// restarts; without, in memory (a restart is empty).
    data: Option<PathBuf>,
}

impl Broker {
    /// Starts a broker on a free port, with its data in memory.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts a broker that keeps its data in `dir` across restarts.
    pub fn start_keeping_data(dir: &std::path::Path) -> Self {
        Self::start_on(Some(dir.to_owned()))
    }

    fn start_on(data: Option<PathBuf>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut broker = Self {
            child: None,
            port,
            data,
        };
        broker.restart();
        broker
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker again on its port: empty with its storage in memory, or with what it
    /// kept in its data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // The SQLite engine's file is relative to the working directory.
        let (storage, dir) = match &self.data {
            Some(dir) => ("sqlite://tansu.db", dir.clone()),
            None => ("memory://tansu/", std::env::temp_dir()),
        };
        let child = Command::new(tansu_binary())
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (its data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Received {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record key (the aggregate id).
    pub key: String,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The CloudEvent.
    pub event: Value,
}

impl Received {
    /// The CloudEvent's `id` as a number.
    pub fn seq(&self) -> u64 {
        self.event["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the id of {:?} is a decimal string", self.event))
    }
}

/// Reads every partition of the three topics from the beginning, on a thread of its own.
pub struct Reader {
    stop: Arc<AtomicBool>,
    /// Everything read so far, in the order read.
    pub received: Arc<Mutex<Vec<Received>>>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `<prefix>.{inventory,carts,orders}` on `brokers`.
    pub fn start(brokers: &str, prefix: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("stockroom-test-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("a consumer");
        // Assigning a topic that does not exist yet would wait for a metadata refresh; the
        // server creates its topics at start, so wait for them.
        let names: Vec<String> = ["inventory", "carts", "orders"]
            .iter()
            .map(|kind| format!("{prefix}.{kind}"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exist = consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|metadata| {
                    names.iter().all(|name| {
                        metadata
                            .topics()
                            .iter()
                            .any(|topic| topic.name() == name && topic.partitions().len() == PARTITIONS as usize)
                    })
                })
                .unwrap_or(false);
            if exist {
                break;
            }
            assert!(Instant::now() < deadline, "the topics {names:?} were never created");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut partitions = TopicPartitionList::new();
        for kind in ["inventory", "carts", "orders"] {
            for partition in 0..PARTITIONS {
                partitions
                    .add_partition_offset(&format!("{prefix}.{kind}"), partition, Offset::Beginning)
                    .expect("a partition offset");
            }
        }
        consumer.assign(&partitions).expect("assigned");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let event: Value =
                        serde_json::from_slice(message.payload().unwrap_or_default()).expect("every record is JSON");
                    let content_type = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|header| header.key == "content-type")
                            .and_then(|header| header.value)
                            .map(|value| String::from_utf8_lossy(value).into_owned())
                    });
                    received.lock().unwrap().push(Received {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                        content_type,
                        event,
                    });
                }
            })
        };
        Self {
            stop,
            received,
            thread: Some(thread),
        }
    }

    /// The distinct event ids read so far.
    pub fn seqs(&self) -> HashSet<u64> {
        self.received.lock().unwrap().iter().map(Received::seq).collect()
    }

    /// Waits until every id in `expected` was read; panics with the missing ones after
    /// `timeout`.
    pub async fn wait_for(&self, expected: impl Iterator<Item = u64> + Clone, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seqs();
            let missing: Vec<u64> = expected.clone().filter(|seq| !seen.contains(seq)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} events never arrived, the first: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops reading and returns everything read.
    pub fn finish(mut self) -> Vec<Received> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the reader thread");
        }
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every event of the log, in sequence order.
pub fn event_log(log: &dyn Log) -> Vec<EventRecord> {
    let (events, _) = read_events(log, 0, 0, usize::MAX).expect("the log reads");
    events.into_iter().map(|(_, event)| event).collect()
}

/// Checks what was read against the log: every event present (duplicates allowed), on its
/// kind's topic, keyed by its aggregate, a CloudEvent with the log's type, subject and time;
/// and per aggregate the events in log order (ignoring copies of events already read).
pub fn check_against_log(received: &[Received], log: &[EventRecord], prefix: &str, source: &str) {
    let by_seq: HashMap<u64, &EventRecord> = log.iter().map(|record| (record.seq, record)).collect();
    let mut seen = HashSet::new();
    let mut last_by_key: HashMap<&str, u64> = HashMap::new();
    let mut partition_of_key: HashMap<&str, (String, i32)> = HashMap::new();
    for record in received {
        let seq = record.seq();
        let expected = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("event {seq} read from Kafka is not in the log"));
        let event = &record.event;
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(event["source"], source, "{event}");
        assert_eq!(event["type"], expected.event.type_name(), "{event}");
        assert_eq!(event["subject"], expected.event.subject().as_str(), "{event}");
        assert_eq!(record.key, expected.event.subject(), "the key is the aggregate id");
        assert_eq!(
            event["time"],
            stockroom::domain::clock::rfc3339(expected.time_ms),
            "{event}"
        );
        assert_eq!(event["datacontenttype"], "application/json", "{event}");
        assert!(event["data"].is_object(), "{event}");
        assert_eq!(record.content_type.as_deref(), Some("application/cloudevents+json"));
        let kind = match expected.event {
            stockroom::domain::DomainEvent::Sku { .. }
            | stockroom::domain::DomainEvent::Location { .. }
            | stockroom::domain::DomainEvent::Movement { .. } => "inventory",
            stockroom::domain::DomainEvent::Cart { .. } => "carts",
            stockroom::domain::DomainEvent::Order { .. } => "orders",
        };
        assert_eq!(record.topic, format!("{prefix}.{kind}"), "{event}");
        let place = partition_of_key
            .entry(&record.key)
            .or_insert_with(|| (record.topic.clone(), record.partition));
        assert_eq!(
            *place,
            (record.topic.clone(), record.partition),
            "one aggregate, one partition"
        );
        if seen.insert(seq) {
            if let Some(previous) = last_by_key.insert(&record.key, seq) {
                assert!(
                    previous < seq,
                    "events of {} out of order: {seq} read after {previous}",
                    record.key
                );
            }
        }
    }
    let missing: Vec<u64> = log
        .iter()
        .map(|record| record.seq)
        .filter(|seq| !seen.contains(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never read, the first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// How many times each id was read, for the duplicate counts.
pub fn copies(received: &[Received]) -> BTreeMap<u64, usize> {
    let mut copies = BTreeMap::new();
    for record in received {
        *copies.entry(record.seq()).or_default() += 1;
    }
    copies
}

/// The value of an unlabelled gauge or counter in a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The records of `<prefix>.deadletter` as JSON, read from the beginning until `count` are in;
/// panics after `timeout`.
pub fn read_dead_letters(brokers: &str, prefix: &str, count: usize, timeout: Duration) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("stockroom-test-deadletter-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions
            .add_partition_offset(&format!("{prefix}.deadletter"), partition, Offset::Beginning)
            .expect("a partition offset");
    }
    consumer.assign(&partitions).expect("assigned");
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} dead letters read",
            records.len()
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            records.push(serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON"));
        }
    }
    records
}
