import Testing
@testable import HTTPAPI

/// Terminal output rendered as HTML as a terminal would show it, in bounded memory.
@Suite struct ANSIHTMLTests {
    func render(_ pieces: [[UInt8]]) -> String {
        var renderer = ANSIHTMLRenderer()
        var out = ""
        for piece in pieces { out += renderer.feed(piece) }
        return out + renderer.finish()
    }

    func render(_ text: String) -> String { render([Array(text.utf8)]) }

    @Test func coloursOfEveryKindBecomeStyles() {
        #expect(render("\u{1B}[31mred\u{1B}[0m plain\n") == #"<span style="color:#e06060">red</span> plain"# + "\n")
        #expect(render("\u{1B}[94;41mx\u{1B}[39;49my") == #"<span style="color:#7575ff;background-color:#cd0000">x</span>y"#)
        #expect(render("\u{1B}[38;5;21ma\u{1B}[38;5;244mb\u{1B}[38;5;3mc")
                == #"<span style="color:#7878ff">a</span><span style="color:#888888">b</span><span style="color:#cdcd00">c</span>"#)
        #expect(render("\u{1B}[48;2;255;128;0mo\u{1B}[m") == #"<span style="background-color:#ff8000">o</span>"#)
        #expect(render("\u{1B}[1;3;4mall\u{1B}[22mthin\u{1B}[0m")
                == #"<span style="font-weight:bold;font-style:italic;text-decoration:underline">all</span><span style="font-style:italic;text-decoration:underline">thin</span>"#)
    }

    @Test func carriageReturnsBackspacesAndErasesActOnTheLine() {
        #expect(render("progress 10%\rprogress 100%\n") == "progress 100%\n")
        #expect(render("abcdef\rXY\n") == "XYcdef\n")
        #expect(render("abcdef\rXY\u{1B}[K\n") == "XY\n")
        #expect(render("ab\u{08}c\n") == "ac\n")
        #expect(render("line\r\nnext\r\n") == "line\nnext\n")
        // A colour change in the middle of an overwrite keeps each character's own style.
        #expect(render("aaaa\r\u{1B}[32mbb\u{1B}[0m\n") == #"<span style="color:#00cd00">bb</span>aa"# + "\n")
    }

    @Test func textIsEscapedAndBrokenUTF8Replaced() {
        #expect(render("<b>&\"</b>") == "&lt;b&gt;&amp;&quot;&lt;/b&gt;")
        #expect(render([Array("bad ".utf8) + [0xFF, 0xC3] + Array(" end".utf8)]) == "bad \u{FFFD}\u{FFFD} end")
        // A character split between two pieces is whole.
        let euro = Array("€".utf8)
        #expect(render([Array(euro[0..<1]), Array(euro[1...])]) == "€")
        // Other escapes (cursor, title) and controls are dropped.
        #expect(render("\u{1B}]0;title\u{07}a\u{1B}[2Jb\u{1B}(Bc\u{07}d") == "abcd")
    }

    @Test func aHugeLineIsCutAndMemoryStaysBounded() {
        var renderer = ANSIHTMLRenderer()
        var emitted = 0
        for _ in 0..<100 { emitted += renderer.feed([UInt8](repeating: UInt8(ascii: "x"), count: 10_000)).count }
        emitted += renderer.finish().count
        // 1,000,000 characters, cut into lines of the limit (each with its newline).
        #expect(emitted == 1_000_000 + 1_000_000 / ANSIHTMLRenderer.maximumLineCells)
    }

    /// Every colour a program may name (the 16, the 256-colour cube and greys, and 24-bit ones)
    /// is shown at 4.5:1 or more against the log's background.
    @Test func everyTextColourIsReadableOnTheLogBackground() {
        var colours = (0..<256).compactMap { ANSIHTMLRenderer.color256($0) }
        colours += ["#010203", "#123456", "#ff00ff", "#202020", "#1e1e1f"]
        for colour in colours {
            let shown = ANSIHTMLRenderer.readable(colour)
            let r = Int(shown.dropFirst().prefix(2), radix: 16)!, g = Int(shown.dropFirst(3).prefix(2), radix: 16)!
            let b = Int(shown.dropFirst(5).prefix(2), radix: 16)!
            #expect(ANSIHTMLRenderer.contrast(r, g, b) >= 4.5, "\(colour) shown as \(shown)")
        }
        #expect(ANSIHTMLRenderer.readable("#00cd00") == "#00cd00", "a readable colour is kept")
        #expect(ANSIHTMLRenderer.readable("#000000") != "#000000")
    }
}
