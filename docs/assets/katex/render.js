// Render the formulas arithmatex leaves as \( ... \) and \[ ... \] with the KaTeX copy served by the site itself
// (docs/assets/katex, KaTeX 0.16.22, MIT): no network. Material re-renders on every instant page load.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
  });
});
