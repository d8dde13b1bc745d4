(function () {
  var form = document.getElementById('verdict');
  document.documentElement.setAttribute('data-shortcuts', 'on');
  if (!form) return;
  var rows = Array.prototype.slice.call(form.querySelectorAll('.row[data-score]'));
  var message = document.getElementById('message');
  var current = 0, sent = false;
  function show(i) {
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, j) { r.classList.toggle('current', j === current); });
    form.setAttribute('data-current', rows[current].getAttribute('data-score'));
  }
  function missing() {
    return rows.filter(function (r) { return !r.querySelector('input:checked'); })
               .map(function (r) { return r.getAttribute('data-score'); });
  }
  rows.forEach(function (r, j) {
    r.addEventListener('change', function () { show(j + 1); });
  });
  form.addEventListener('submit', function (e) {
    var left = missing();
    if (left.length) {
      e.preventDefault();
      message.textContent = 'Score ' + left.join(', ') + ' first (keys 1-5), then pass or fail.';
      show(rows.indexOf(rows.filter(function (r) { return !r.querySelector('input:checked'); })[0]));
      return;
    }
    if (sent) { e.preventDefault(); return; }
    sent = true;
  });
  function typing(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
    if (tag !== 'INPUT') return false;
    return ['radio', 'checkbox', 'button', 'submit', 'reset', 'hidden'].indexOf((el.type || '').toLowerCase()) < 0;
  }
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.altKey || e.metaKey || e.isComposing || typing(e.target)) return;
    var k = e.key;
    if (k >= '1' && k <= '5' && k.length === 1) {
      var input = rows[current].querySelector('input[value="' + k + '"]');
      input.checked = true;
      message.textContent = '';
      show(current + 1);
    } else if (k === 'Backspace') {
      show(current - 1);
    } else if (k === 'p' || k === 'P') {
      document.getElementById('pass').click();
    } else if (k === 'x' || k === 'X') {
      document.getElementById('fail').click();
    } else if (k === 's' || k === 'S') {
      if (!sent) { sent = true; document.getElementById('skip').submit(); }
    } else {
      return;
    }
    e.preventDefault();
  });
  show(0);
})();
