//! Fuzzes what the server does with every client text frame before touching state:
//! parse it strictly, then check its value rules. Neither may panic or allocate
//! without bound, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::ws::protocol::ClientFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::parse(text) {
        let _ = frame.id();
        let _ = frame.check_values(2000);
    }
});
