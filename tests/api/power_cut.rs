//! Power cuts: the real binary keeps its data directory on a file system that holds every
//! write in memory until it is fsynced ([`PowerCutFs`]). Under keyed load the server is
//! killed, every write that was not fsynced is dropped, and the server restarts on what is
//! left. Every acknowledged change must be there and stock must be conserved, cycle after
//! cycle: so every file and directory entry the store depends on must be fsynced.

use crate::crash::{crash_four_skus, crash_run};
use crate::power_cut_fs::PowerCutFs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_under_keyed_load_loses_nothing_acknowledged_over_ten_cycles() {
    let (cycles, mut rng, dir, client) = crash_run("power-cut test", 10);
    let mountpoint = dir.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let mounted = PowerCutFs::mount(&mountpoint)
        .unwrap_or_else(|error| panic!("mounting the power-cut file system (needs /dev/fuse and root): {error}"));
    let power_cut = || mounted.fs.power_cut();
    let (cycles, acknowledged) = crash_four_skus(&mountpoint, &client, &mut rng, cycles, &power_cut).await;
    println!(
        "{cycles} power cuts, {acknowledged} acknowledged requests, every one accounted for ({} fsyncs)",
        mounted.fs.syncs()
    );
}
