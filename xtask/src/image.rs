//! `cargo xtask image`: Herald's container image built on this machine without pulling
//! anything, plus the two images the lab's real nodes need (the pod sandbox and a backend).
//!
//! - `localhost/herald:dev-<hash>`: the musl-static `herald` (release, XDP object embedded) in
//!   the final stage of the repository's `Dockerfile`, taken from that file, so the public build
//!   and this one put the same binary at the same path with the same user and entrypoint. The
//!   tag is the binary's SHA-256 prefix: a changed binary is a new tag, which a DaemonSet rolls.
//! - `localhost/herald-lab/pause:1`: a static C program (`xtask/images/pause.c`) as the sandbox.
//! - `localhost/herald-lab/backend:1`: Debian's static busybox, whose `httpd` the lab's
//!   Deployment runs.
//!
//! podman builds `FROM scratch` with `--network none` (otherwise it sets up a bridge and
//! iptables chains on the host) into its own storage under `target/images`, and saves each image
//! as a docker archive there for `ctr images import` on every node.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::paths::workspace_root;

const MUSL: &str = "x86_64-unknown-linux-musl";
pub const PAUSE: &str = "localhost/herald-lab/pause:1";
pub const BACKEND: &str = "localhost/herald-lab/backend:1";
pub const HERALD_REPO: &str = "localhost/herald";

#[derive(clap::Args, Clone, Default)]
pub struct ImageArgs {
    /// Also tag Herald's image with this tag (a rollout to a "new" image in tests).
    #[arg(long)]
    pub extra_tag: Option<String>,
    /// Also build MetalLB's controller and speaker images (static, from its Go module), for
    /// comparisons on the same nodes.
    #[arg(long)]
    pub metallb: bool,
}

/// MetalLB's release its images are built from.
pub const METALLB_VERSION: &str = "v0.15.2";

/// One image built here: its reference and its docker archive.
#[derive(Clone, Debug)]
pub struct Image {
    pub reference: String,
    pub archive: PathBuf,
}

/// The images [`build`] makes.
#[derive(Clone, Debug)]
pub struct Images {
    pub herald: Image,
    pub pause: Image,
    pub backend: Image,
}

impl Images {
    pub fn all(&self) -> [&Image; 3] {
        [&self.herald, &self.pause, &self.backend]
    }
}

pub fn run(args: &ImageArgs) -> Result<()> {
    let images = build()?;
    for image in images.all() {
        println!("{}  {}", image.reference, image.archive.display());
    }
    if args.metallb {
        for image in metallb()? {
            println!("{}  {}", image.reference, image.archive.display());
        }
    }
    if let Some(tag) = &args.extra_tag {
        let extra = retag(&images.herald, tag)?;
        println!("{}  {}", extra.reference, extra.archive.display());
    }
    Ok(())
}

fn images_dir() -> PathBuf {
    workspace_root().join("target/images")
}

/// Builds all three images (cached: an archive already saved for the same tag is kept).
pub fn build() -> Result<Images> {
    ensure_tools()?;
    let dir = images_dir();
    fs::create_dir_all(&dir)?;
    let herald = herald_binary()?;
    let tag = format!("dev-{}", short_hash(&herald)?);
    let herald_ref = format!("{HERALD_REPO}:{tag}");
    let herald = image(
        &herald_ref,
        &[(herald.as_path(), "herald")],
        &herald_containerfile(&fs::read_to_string(workspace_root().join("Dockerfile"))?)?,
    )?;
    let pause_bin = dir.join("pause");
    if !pause_bin.is_file() {
        sh(Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(&pause_bin)
            .arg(workspace_root().join("xtask/images/pause.c")))?;
    }
    let pause = image(
        PAUSE,
        &[(pause_bin.as_path(), "pause")],
        "FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n",
    )?;
    let backend = image(
        BACKEND,
        &[(Path::new("/bin/busybox"), "busybox")],
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
    )?;
    Ok(Images {
        herald,
        pause,
        backend,
    })
}

/// MetalLB's controller and speaker as `localhost/metallb/<component>:v0.15.2`: each built
/// static (`CGO_ENABLED=0`) from `go.universe.tf/metallb/<component>` into an image holding only
/// `/<component>` as its entrypoint and running as root, the layout of MetalLB's own images
/// (distroless/static, whose default user is root), so its manifests run them with only the
/// image names swapped.
pub fn metallb() -> Result<[Image; 2]> {
    let bin = images_dir().join("metallb-bin");
    fs::create_dir_all(&bin)?;
    let mut out = Vec::new();
    for component in ["controller", "speaker"] {
        let binary = bin.join(component);
        if !binary.is_file() {
            let module = format!("go.universe.tf/metallb/{component}@{METALLB_VERSION}");
            println!("==> go install {module} (static; ~2 min cold)");
            sh(Command::new("go")
                .args(["install", &module])
                .env("GOBIN", &bin)
                .env("CGO_ENABLED", "0")
                .current_dir(std::env::temp_dir()))?;
        }
        out.push(image(
            &format!("localhost/metallb/{component}:{METALLB_VERSION}"),
            &[(binary.as_path(), component)],
            &format!(
                "FROM scratch\nCOPY {component} /{component}\nENTRYPOINT [\"/{component}\"]\n"
            ),
        )?);
    }
    let [controller, speaker]: [Image; 2] = out
        .try_into()
        .map_err(|_| anyhow::anyhow!("two MetalLB images"))?;
    Ok([controller, speaker])
}

/// Herald's image under another tag (same binary), saved as its own archive.
pub fn retag(herald: &Image, tag: &str) -> Result<Image> {
    let reference = format!("{HERALD_REPO}:{tag}");
    podman(&["tag", &herald.reference, &reference])?;
    save(&reference)
}

/// The release musl-static `herald` with the XDP object embedded.
fn herald_binary() -> Result<PathBuf> {
    let root = workspace_root();
    crate::ebpf::build(&crate::ebpf::BuildArgs {})?;
    println!("==> cargo build --release --target {MUSL} -p herald (static; cold ~5 min)");
    sh(Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "herald",
            "--bin",
            "herald",
            "--target",
            MUSL,
        ])
        .current_dir(&root))?;
    Ok(root.join(format!("target/{MUSL}/release/herald")))
}

/// The final stage of the Dockerfile (from its last `FROM scratch`), with the binary copied from
/// the build context instead of the builder stage.
pub fn herald_containerfile(dockerfile: &str) -> Result<String> {
    let start = dockerfile
        .rfind("\nFROM scratch")
        .context("the Dockerfile has no final `FROM scratch` stage")?;
    let stage = &dockerfile[start + 1..];
    let copy = "COPY --from=builder /herald /herald";
    if stage.matches("COPY").count() != 1 || !stage.contains(copy) {
        bail!("the Dockerfile's final stage must copy exactly `{copy}`, nothing else");
    }
    Ok(stage.replace(copy, "COPY herald /herald"))
}

fn short_hash(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

/// Builds `reference` from `containerfile` with `files` (source, name in the context), unless
/// its archive exists.
fn image(reference: &str, files: &[(&Path, &str)], containerfile: &str) -> Result<Image> {
    let archive = archive_path(reference);
    if archive.is_file() {
        return Ok(Image {
            reference: reference.to_string(),
            archive,
        });
    }
    let context = images_dir().join("context").join(sanitize(reference));
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context)?;
    for (source, name) in files {
        fs::copy(source, context.join(name))
            .with_context(|| format!("copying {}", source.display()))?;
    }
    fs::write(context.join("Containerfile"), containerfile)?;
    println!("==> podman build {reference}");
    podman(&[
        "build",
        "--network",
        "none",
        "--quiet",
        "-t",
        reference,
        "-f",
        &context.join("Containerfile").display().to_string(),
        &context.display().to_string(),
    ])?;
    save(reference)
}

fn save(reference: &str) -> Result<Image> {
    let archive = archive_path(reference);
    let _ = fs::remove_file(&archive);
    podman(&[
        "save",
        "--quiet",
        "--format",
        "docker-archive",
        "-o",
        &archive.display().to_string(),
        reference,
    ])?;
    Ok(Image {
        reference: reference.to_string(),
        archive,
    })
}

fn sanitize(reference: &str) -> String {
    reference.replace(['/', ':'], "_")
}

fn archive_path(reference: &str) -> PathBuf {
    images_dir().join(format!("{}.tar", sanitize(reference)))
}

/// podman with its storage under target/images (nothing in /var/lib/containers).
fn podman(args: &[&str]) -> Result<()> {
    let dir = images_dir();
    sh(Command::new("podman")
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(args))
}

fn ensure_tools() -> Result<()> {
    let tools = [
        ("podman", "podman"),
        ("musl-gcc", "musl-tools"),
        ("gcc", "gcc"),
        ("busybox", "busybox-static"),
        ("file", "file"),
    ];
    let static_busybox = || {
        Command::new("file")
            .arg("-L")
            .arg("/bin/busybox")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"))
    };
    let mut missing = crate::paths::missing_packages(&tools);
    if crate::paths::have("busybox") && !static_busybox() {
        missing.push("busybox-static");
    }
    crate::paths::apt_install(&missing)?;
    if !static_busybox() {
        bail!("/bin/busybox is not the static build: apt-get install busybox-static");
    }
    sh(Command::new("rustup").args(["target", "add", MUSL]))?;
    Ok(())
}

fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {}", cmd.get_program().display()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_image_is_the_dockerfiles_final_stage() {
        let dockerfile =
            fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
        let stage = herald_containerfile(&dockerfile).expect("final stage");
        assert!(stage.starts_with("FROM scratch\n"), "{stage}");
        assert!(stage.contains("COPY herald /herald\n"), "{stage}");
        assert!(stage.contains("USER 65532:65532\n"), "{stage}");
        assert!(stage.contains("ENTRYPOINT [\"/herald\"]"), "{stage}");
        assert!(!stage.contains("--from=builder"));
    }

    #[test]
    fn a_final_stage_copying_more_is_refused() {
        let two = "FROM x AS builder\nRUN x\nFROM scratch\nCOPY --from=builder /herald /herald\nCOPY --from=builder /etc/passwd /etc/passwd\n";
        assert!(herald_containerfile(two).is_err());
        assert!(herald_containerfile("FROM debian\n").is_err());
    }
}
