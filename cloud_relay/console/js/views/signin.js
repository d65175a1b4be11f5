// The sign-in card: shown until the relay accepts a user, and again after signing out.

import { $ } from "../dom.js";

export class SignInView {
  /** `onSubmit({user, password})` when the form is sent. */
  bind(onSubmit) {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      onSubmit({ user: $("signin-user").value.trim(), password: $("signin-password").value });
    });
  }

  show(message = "") {
    $("console").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message;
    $("signin-user").focus();
  }

  /** Signed in: the console replaces the card, and the password leaves the page. */
  hide() {
    $("signin-password").value = "";
    $("signin").hidden = true;
    $("console").hidden = false;
  }

  error(message) {
    $("signin-error").textContent = message;
  }
}
