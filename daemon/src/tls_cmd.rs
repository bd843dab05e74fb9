//! `steep-repl tls init` and `tls issue`: the cluster CA and node
//! certificates for mutual TLS between peers.

use crate::config;
use crate::exit::Exit;
use std::path::{Path, PathBuf};
use steep_repl_actors::pki;

/// Where certificates go by default: `tls/` beside the configuration file.
pub fn default_dir(config: Option<&Path>) -> PathBuf {
    let config = config
        .map(Path::to_path_buf)
        .unwrap_or_else(config::default_config_path);
    config.parent().unwrap_or(Path::new(".")).join("tls")
}

pub fn init(dir: &Path, cluster_name: &str, days: u32) -> Exit {
    match pki::init_ca(dir, cluster_name, days) {
        Ok(files) => {
            println!("cluster CA created:");
            println!(
                "  certificate  {}  (copy to every node: grpc.tls.ca_file)",
                files.cert.display()
            );
            println!(
                "  private key  {}  (keep it here, private: it signs node certificates)",
                files.key.display()
            );
            println!("  valid until  {}", files.not_after.date());
            println!(
                "next: steep-repl tls issue <node_id> --host <name or address peers use> --dir {}",
                dir.display()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {e}");
            Exit::Error
        }
    }
}

pub fn issue(dir: &Path, node_id: &str, hosts: &[String], days: u32) -> Exit {
    match pki::issue_node(dir, node_id, hosts, days) {
        Ok(files) => {
            println!(
                "certificate for node {node_id} created (signed by {}):",
                files.ca_cert.display()
            );
            println!(
                "  certificate  {}  (grpc.tls.cert_file)",
                files.cert.display()
            );
            println!(
                "  private key  {}  (grpc.tls.key_file, mode 0600)",
                files.key.display()
            );
            println!("  names        {}", files.subject_alt_names.join(", "));
            println!("  valid until  {}", files.not_after.date());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {e}");
            Exit::Error
        }
    }
}
