//! The `-o` option parser of mount-branches / mount.fuse3 on arbitrary
//! text: whatever it accepts must survive `build` and parse back the same.
#![no_main]
use layerfs::mount::options::{build, helper_args, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let opts: Vec<String> = s.split(',').map(str::to_string).collect();
    if let Ok(b) = parse(&opts) {
        let again = parse(&build(&b)).expect("built options parse");
        assert_eq!(again.upper, b.upper);
        assert_eq!(again.work, b.work);
        assert_eq!(again.lowers, b.lowers);
    }
    let args: Vec<String> = s.split('\n').map(str::to_string).collect();
    let _ = helper_args(&args, true);
    let _ = helper_args(&args, false);
});
