//! Power cuts: the real binary keeps its data directory on a file system that holds every
//! write in memory until it is fsynced ([`PowerCutFs`]). Under keyed load the server is
//! killed, every write that was not fsynced is dropped, and the server restarts on what is
//! left. Every acknowledged change must be there and stock must be conserved, cycle after
//! cycle: so every file and directory entry the store depends on must be fsynced.

use std::sync::{Arc, Mutex};

use crate::crash::{check, crash_cycle_then, crash_run, put_sku, Model, ServerProcess, INITIAL_ON_HAND, SKUS};
use crate::power_cut_fs::PowerCutFs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_under_keyed_load_loses_nothing_acknowledged_over_ten_cycles() {
    let (cycles, mut rng, dir, client) = crash_run("power-cut test", 10);
    let mountpoint = dir.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let mounted = PowerCutFs::mount(&mountpoint)
        .unwrap_or_else(|error| panic!("mounting the power-cut file system (needs /dev/fuse and root): {error}"));
    let skus: Vec<String> = SKUS.iter().map(|sku| (*sku).to_owned()).collect();
    let model = Arc::new(Mutex::new(Model::new(skus.clone())));

    let mut server = ServerProcess::start(&mountpoint, &client).await;
    for sku in SKUS {
        put_sku(&client, &server.base, sku, INITIAL_ON_HAND).await;
    }
    let mut acknowledged_total = 0;
    let power_cut = || mounted.fs.power_cut();
    for cycle in 0..cycles {
        let (restarted, acknowledged, _) =
            crash_cycle_then(server, &mountpoint, &client, &model, &mut rng, cycle, &[], &power_cut).await;
        server = restarted;
        acknowledged_total += acknowledged;
        let snapshot = std::mem::take(&mut *model.lock().unwrap());
        check(
            &client,
            &server.base,
            &snapshot,
            &mut rng,
            cycle,
            &skus,
            INITIAL_ON_HAND,
        )
        .await;
        *model.lock().unwrap() = snapshot;
    }
    drop(server);
    assert!(
        acknowledged_total > cycles * 10,
        "the load did real work: {acknowledged_total} acknowledged requests"
    );
    println!(
        "{cycles} power cuts, {acknowledged_total} acknowledged requests, every one accounted for ({} fsyncs)",
        mounted.fs.syncs()
    );
}
